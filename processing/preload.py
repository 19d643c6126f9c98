"""Modules a reduction needs only after its first stages, imported meanwhile
in a thread.

photutils.psf (which brings matplotlib) takes 0.6 s to import, paid the
first time a process builds a PSF, and pyplot 0.15 s more in the plotting
child.  Background and detection, which follow the input's checks, spend
most of their time in C code that lets another thread run, so these
imports cost the benchmark's wall time about 0.1 s instead of 0.5 s.
pyplot is imported, not set to a backend: the child's ``plots`` chooses
Agg, and a notebook's backend stays as it is.  A process must not fork
while another of its threads may hold an import lock (the child would wait
on it for ever): ``wait`` before forking.
"""
import importlib
import sys
import threading

MODULES = ("photutils.psf", "matplotlib.pyplot")

_thread = None


def start():
    """Import ``MODULES`` in a thread, unless they are imported already."""
    global _thread
    if all(name in sys.modules for name in MODULES) or (_thread is not None and _thread.is_alive()):
        return
    _thread = threading.Thread(target=_import_all, name="preload", daemon=True)
    _thread.start()


def wait():
    """Return once the thread ``start`` began has finished."""
    if _thread is not None:
        _thread.join()


def _import_all():
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:       # the stage that needs it imports it again and says why
            return

"""The run log: one line per event, flushed at once so a watcher sees progress.

Line format: ``2026-11-25T03:14:15.926Z  <stage>  <message>``.  Each stage
opens with ``stage NAME started`` and closes with ``stage NAME done in
S s (CPU C s)``; ``timings`` and ``cpu_timings`` keep the seconds per stage.
"""
import contextlib
import datetime
import logging
import resource
import sys
import time
import warnings


def cpu_seconds():
    """User + system CPU time of this process (all threads) and of its
    finished children (the plotting fork, solve-field)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Logbook:
    def __init__(self, path=None, echo=False):
        self._file = open(path, "a", buffering=1, encoding="utf-8") if path else None
        self._echo = echo
        self.stage = "start"
        self.timings = {}          # stage -> wall seconds
        self.cpu_timings = {}      # stage -> CPU seconds
        self._t0 = time.perf_counter()
        self._stage_t0 = self._stage_cpu0 = None

    def begin(self, stage):
        self.stage, self._stage_t0, self._stage_cpu0 = stage, time.perf_counter(), cpu_seconds()
        self.write(f"stage {stage} started")

    def end(self):
        """Close the current stage: its wall and CPU times are logged and kept."""
        seconds = time.perf_counter() - self._stage_t0
        cpu = cpu_seconds() - self._stage_cpu0
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + seconds
        self.cpu_timings[self.stage] = self.cpu_timings.get(self.stage, 0.0) + cpu
        self.write(f"stage {self.stage} done in {seconds:.3f} s (CPU {cpu:.3f} s)")
        self._stage_t0 = self._stage_cpu0 = None

    def write(self, message):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = f"{stamp}  {self.stage:<11s}  {message}"
        if self._file:
            self._file.write(line + "\n")
        if self._echo:
            print(line, file=sys.stderr, flush=True)

    __call__ = write

    def close(self):
        if self._file:
            self._file.close()
            self._file = None

    @property
    def elapsed(self):
        return time.perf_counter() - self._t0


@contextlib.contextmanager
def warnings_into(log):
    """Python warnings (numpy's, astropy's, the libraries') and astropy's log
    messages go into ``log`` while the block runs, each text once, instead
    of onto the terminal."""
    from astropy import log as astropy_log
    seen = set()

    def write(text):
        text = " ".join(str(text).split())
        if text not in seen:
            seen.add(text)
            log(f"library warning: {text}")

    class Handler(logging.Handler):
        def emit(self, record):
            write(f"{record.getMessage()} [{record.name}]")

    from astropy.logger import LoggingError
    handlers, capture = list(astropy_log.handlers), astropy_log.warnings_logging_enabled()
    if capture:
        try:
            astropy_log.disable_warnings_logging()
        except LoggingError:        # another warnings hook is in place (pytest's): leave it
            capture = False
    for handler in handlers:
        astropy_log.removeHandler(handler)
    astropy_log.addHandler(Handler())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, category, *args, **kwargs: write(
                f"{category.__name__}: {message}")
            yield
    finally:
        for handler in list(astropy_log.handlers):
            astropy_log.removeHandler(handler)
        for handler in handlers:
            astropy_log.addHandler(handler)
        if capture:
            astropy_log.enable_warnings_logging()

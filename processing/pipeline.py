"""``reduce``: the pipeline's one entry point (a path and a config in, a result out).

A reduction is one ``Reduction`` context walked through ``STAGES`` in
order; each stage (``stages.py``) reads what the earlier ones left on the
context and adds its own result.  The runner logs each stage's start, end
and time, and collects warnings in one place (the log and the summary).
"""
import ctypes
import errno
import json
import shutil
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from . import __version__, astrometry, preload, stages
from .config import Config
from .contract import LOG_NAME, PRODUCT_NAMES, SUMMARY_NAME, Summary, clear_products, write_error
from .errors import OutOfSpaceError, PipelineError
from .logbook import Logbook, warnings_into

#: (stage name, function of the Reduction), in the order they run
STAGES = (
    ("load", stages.load),
    ("header", stages.read_header),
    ("background", stages.background),
    ("detection", stages.detection),
    ("psf-model", stages.psf_model),
    ("astrometry", stages.initial_wcs),
    ("refcat", stages.reference_stars),
    ("refinement", stages.refine_wcs),
    ("psf-fit", stages.psf_fit),
    ("photometry", stages.aperture_photometry),
    ("calibration", stages.calibration),
    ("catalogue", stages.source_catalogue),
    ("enrichment", stages.enrichment),
    ("limits", stages.limits),
    ("products", stages.products),
)


@dataclass
class Reduction:
    """Everything one reduction knows, filled in stage by stage."""
    image_path: Path
    out: Path
    config: Config
    log: Logbook
    warnings: list = field(default_factory=list)
    checksum: str = None
    frame: object = None               # fitsio.Frame
    info: object = None                # header.ObsInfo
    header_wcs: object = None          # the header's WCS (ICRS), or None ...
    header_wcs_problem: str = None     # ... and why
    masks: object = None               # detect.Masks
    background: object = None          # detect.Background
    data_sub: np.ndarray = None        # background-subtracted pixels (ADU)
    detections: object = None          # detect.Detections
    fwhm0: float = None                # first FWHM estimate (px)
    psf_fit: object = None             # psf.PSFFit, None without a PSF model
    psf: object = None                 # psf.PSFModel
    x: np.ndarray = None               # windowed centroids (0-based px)
    y: np.ndarray = None
    astrometry: object = None          # astrometry.Solution
    unverified_wcs: str = None         # why the WCS could not be checked against reference stars
    reference: Table = None            # reference stars at mid-exposure
    photometry: object = None          # aperture.Photometry
    ra: np.ndarray = None              # source positions (deg)
    dec: np.ndarray = None
    gaia: object = None                # calibrate.GaiaMatch
    calibration: object = None         # calibrate.Calibration, None when it failed ...
    calibration_error: str = None      # ... and why
    sources: Table = None
    enrichment: dict = None            # the summary's enrichment entries
    limit: float = None                # 5-sigma limiting magnitude
    limit_method: str = None           # what the limit was measured with
    summary: Summary = None

    def warn(self, message):
        """A warning for the observer: logged now, listed in the summary."""
        self.warnings.append(message)
        self.log(f"warning: {message}")

    @property
    def wcs(self):
        return self.astrometry.wcs

    @property
    def centre(self):
        return astrometry.frame_centre(self.wcs, self.data_sub.shape)

    @property
    def pixel_scale(self):
        return astrometry.pixel_scale_arcsec(self.wcs)


@dataclass
class Result:
    summary: dict
    sources: Table
    out_dir: Path

    def path(self, name):
        return self.out_dir / name


class InternalError(PipelineError):
    """An unexpected failure; the traceback is in the log."""


def _clear_previous(out):
    """Remove products of an earlier run (``contract.clear_products``) and
    its unfinished files, so a failure never looks complete."""
    clear_products(out)
    shutil.rmtree(out / ".partial", ignore_errors=True)


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory():
    """Let glibc keep freed memory for the next allocation instead of
    unmapping it.  The stages allocate and free frame-sized arrays (64-134
    MB on a 4096x4096 frame) many times; by default each comes from a fresh
    mmap and is zeroed page by page by the kernel: 3.8 s of system time on
    the benchmark frame, 1.7 s with this, the peak resident size unchanged.
    Without glibc (or when the call fails) nothing happens."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
    except (OSError, AttributeError):
        pass


def reduce(image_path, out_dir, config=None, echo=False):
    """Reduce one FITS frame into ``out_dir``; raise ``PipelineError`` on bad input.

    On failure the log and ``error.json`` (stage, message) are left, and no
    product; on success ``summary.json`` is written last.
    """
    keep_freed_memory()
    image_path, out = Path(image_path), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    log = Logbook(out / LOG_NAME, echo=echo)
    log(f"RAPAS pipeline {__version__} on {image_path.name}")
    log("stages: " + ", ".join(name for name, _ in STAGES))
    r = Reduction(image_path, out, config or Config(), log)
    try:
        with warnings_into(log):
            try:
                run_stages(r)
            finally:
                preload.wait()
        r.summary.processing_time_s = round(log.elapsed, 3)
        r.summary.stage_times_s = {k: round(v, 3) for k, v in log.timings.items()}
        r.summary.stage_cpu_s = {k: round(v, 3) for k, v in log.cpu_timings.items()}
        log.close()
        write_summary(r.summary, out)
    except PipelineError as exc:
        _fail(out, log, exc)
        raise
    except Exception as exc:
        if not _disk_full(out, exc):
            raise _internal(out, log, exc) from exc
        full = OutOfSpaceError()
        _fail_on_a_full_disk(out, log, full)
        raise full from exc
    return Result(summary=asdict(r.summary), sources=r.sources, out_dir=out)


def run_stages(r):
    """Walk ``STAGES`` over the context, each between begin and end lines in
    the log; once the input has passed ``INPUT_STAGES``, the later stages'
    modules are imported meanwhile (``preload``)."""
    for name, stage in STAGES:
        r.log.begin(name)
        stage(r)
        r.log.end()
        if name == INPUT_STAGES[-1]:
            preload.start()


#: the stages that read and check the input: a frame they refuse fails at
#: once, without waiting for ``preload``'s imports (0.5 s)
INPUT_STAGES = ("load", "header")


def write_summary(summary, out):
    """summary.json, written whole or not at all (it marks a complete product)."""
    tmp = out / (SUMMARY_NAME + ".tmp")
    tmp.write_text(json.dumps(asdict(summary), indent=1, default=_json_default))
    tmp.replace(out / SUMMARY_NAME)


def _internal(out, log, exc):
    """The error to raise for an unexpected exception: the traceback goes to
    the log, one line to the user."""
    log(traceback.format_exc().rstrip())
    wrapped = InternalError(f"internal error in stage {log.stage}: {type(exc).__name__}: {exc}")
    _fail(out, log, wrapped)
    return wrapped


#: free bytes under which the output's disk counts as full after a failure
FULL_DISK_BYTES = 1 << 20


def _disk_full(out, exc):
    """Whether ``exc`` came from a full disk: ENOSPC anywhere in its chain,
    or next to no space left where the products go (astropy and the plot
    process report a full disk in their own words)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(out).free < FULL_DISK_BYTES
    except OSError:
        return False


def _fail_on_a_full_disk(out, log, exc):
    """``_fail`` as far as a full disk lets it; the partial products go
    (``summary.json`` was never written, so nothing passes for complete)."""
    shutil.rmtree(out / ".partial", ignore_errors=True)
    for name in set(PRODUCT_NAMES) - {LOG_NAME} | {SUMMARY_NAME + ".tmp"}:
        (out / name).unlink(missing_ok=True)
    try:
        _fail(out, log, exc)
    except OSError:
        pass


def _fail(out, log, exc):
    log(f"ERROR: {exc}")
    log.close()
    shutil.rmtree(out / ".partial", ignore_errors=True)
    write_error(out, getattr(exc, "stage", "pipeline"), exc)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

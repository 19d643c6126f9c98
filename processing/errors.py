"""Typed pipeline errors.

Every error raised on purpose by the pipeline derives from ``PipelineError``
and carries a message meant for the observer who submitted the frame: one
line, no traceback, saying what is wrong and, where possible, what to do.
"""


def one_line(text, limit=None):
    """``text`` (or an exception) with its whitespace collapsed, cut at ``limit``."""
    flat = " ".join(str(text).split())
    return flat[:limit] if limit else flat


class PipelineError(Exception):
    """Base of all errors the pipeline raises deliberately."""

    stage = "pipeline"

    def __str__(self):
        return one_line(self.args[0]) if self.args else self.stage


class InputError(PipelineError):
    """The file is not a usable 2-D image (not FITS, cube, empty, all-NaN)."""

    stage = "load"


class HeaderError(PipelineError):
    """A header value is missing or impossible and has no safe default."""

    stage = "header"


class AstrometryError(PipelineError):
    """No usable WCS: the header has none (or a broken one) and solving failed."""

    stage = "astrometry"


class NoStarsError(PipelineError):
    """Too few sources were detected to measure anything."""

    stage = "detection"


class CalibrationError(PipelineError):
    """The photometric zero point cannot be fitted (e.g. no calibrators)."""

    stage = "calibration"


class CatalogueError(PipelineError):
    """A reference catalogue could not be read or queried."""

    stage = "catalogue"


class OutOfSpaceError(PipelineError):
    """The disk the products go to is full (ENOSPC)."""

    stage = "products"

    def __init__(self):
        super().__init__("out of disk space while writing the products; nothing usable was written")

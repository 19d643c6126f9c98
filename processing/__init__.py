"""RAPAS photometry pipeline: one FITS frame in, calibrated products out.

The package never imports DaCHS; the archive ingests what it writes.
"""
__version__ = "0.1.0"

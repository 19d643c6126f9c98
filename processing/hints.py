"""Where a frame points and how large its pixels are: the hints a plate
solve starts from.

Pointing (degrees), first found: the observer's ``hint_ra``/``hint_dec``
options; the header's RA/DEC, OBJCTRA/OBJCTDEC, RA-MNT/DEC-MNT,
RA_OBJ/DEC_OBJ, TELRA/TELDEC, RA_OBS/DEC_OBS (sexagesimal hours and degrees,
or decimal degrees); CRVAL1/CRVAL2 of a header WCS too broken to use.

Pixel scale (arcsec/pixel), first found: the ``hint_scale`` option;
PIXSCALE, SCALE, SECPIX, PIXSCAL1, XPIXSCAL; 206.265 * XPIXSZ (um) /
FOCALLEN (mm), where XPIXSZ is read as the binned pixel (the ASCOM and
MaxIm convention) and the range searched widened by XBINNING for software
that writes the unbinned size; the scale of the header's WCS matrix.
"""
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle

POINTING_KEYS = (("RA", "DEC"), ("OBJCTRA", "OBJCTDEC"), ("RA-MNT", "DEC-MNT"), ("RA_OBJ", "DEC_OBJ"),
                 ("TELRA", "TELDEC"), ("RA_OBS", "DEC_OBS"), ("CRVAL1", "CRVAL2"))
SCALE_KEYS = ("PIXSCALE", "SCALE", "SECPIX", "PIXSCAL1", "XPIXSCAL")
#: how far the field centre may be from the pointing (deg): the reference
#: stars to solve against are fetched this far beyond the field
DEFAULT_POINTING_ERROR = 0.5
#: the radius Astrometry.net searches around the pointing (deg; a mount
#: position may be far from the centre of a crop)
SEARCH_RADIUS = 2.0


@dataclass(frozen=True)
class Hint:
    ra: float | None = None             # deg
    dec: float | None = None
    radius_deg: float = DEFAULT_POINTING_ERROR
    scale_low: float | None = None      # arcsec/pixel
    scale_high: float | None = None
    origin: str = ""                    # what the hints came from, for the log

    @property
    def has_pointing(self):
        return self.ra is not None

    @property
    def has_scale(self):
        return self.scale_low is not None

    @property
    def scale(self):
        return None if self.scale_low is None else float(np.sqrt(self.scale_low * self.scale_high))

    def field_radius_deg(self, shape):
        """Radius of the circle enclosing a frame of ``shape`` at the largest scale."""
        return 0.5 * np.hypot(*shape) * self.scale_high / 3600.0


def from_header(header, config):
    """The ``Hint`` for a frame: the observer's options first, then the header."""
    origin = []
    ra, dec = (config.hint_ra, config.hint_dec) if config.hint_ra is not None else (None, None)
    if ra is not None:
        origin.append("pointing from the options")
    else:
        for ra_key, dec_key in POINTING_KEYS:
            position = _position(header.get(ra_key), header.get(dec_key))
            if position is not None:
                ra, dec = position
                origin.append(f"pointing {ra_key}/{dec_key}")
                break
    if config.hint_scale:
        low, high = 0.9 * config.hint_scale, 1.1 * config.hint_scale
        origin.append(f"scale {config.hint_scale:g} arcsec/px from the options")
    else:
        low, high, what = _scale(header)
        if what:
            origin.append(what)
    radius = config.hint_radius if config.hint_radius is not None else DEFAULT_POINTING_ERROR
    return Hint(ra, dec, radius, low, high, ", ".join(origin))


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _position(ra, dec):
    """(ra, dec) in degrees from numbers (degrees) or sexagesimal strings (hours, degrees)."""
    if ra is None or dec is None or str(ra).strip() == "" or str(dec).strip() == "":
        return None
    ra_n, dec_n = _number(ra), _number(dec)
    try:
        if ra_n is not None and dec_n is not None:
            ra_deg, dec_deg = ra_n, dec_n
        else:
            ra_deg = Angle(str(ra).strip(), unit=u.hourangle).degree
            dec_deg = Angle(str(dec).strip(), unit=u.deg).degree
    except (ValueError, u.UnitsError):
        return None
    if not (0.0 <= ra_deg < 360.0 and -90.0 <= dec_deg <= 90.0):
        return None
    return float(ra_deg), float(dec_deg)


def _scale(header):
    """(low, high, origin) of the pixel scale in arcsec/px, or (None, None, '')."""
    for key in SCALE_KEYS:
        value = _number(header.get(key))
        if value and 0.01 < value < 200:
            return 0.9 * value, 1.1 * value, f"scale {key}"
    focal, pixel = _number(header.get("FOCALLEN")), _number(header.get("XPIXSZ"))
    if focal and pixel and focal > 0 and pixel > 0:
        scale = 206.265 * pixel / focal
        binning = max(1.0, _number(header.get("XBINNING")) or 1.0)
        return 0.9 * scale, 1.1 * scale * binning, "scale from FOCALLEN and XPIXSZ"
    scale = _wcs_scale(header)
    if scale:
        return 0.95 * scale, 1.05 * scale, "scale of the header WCS"
    return None, None, ""


def _wcs_scale(header):
    """Pixel scale (arcsec/px) of the header's WCS matrix, which stays right
    when its pointing does not; None without one."""
    import warnings
    from astropy.wcs import WCS
    if "CTYPE1" not in header:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            matrix = WCS(header, relax=True).celestial.pixel_scale_matrix
        except Exception:           # astropy raises many types for broken WCS keywords
            return None
    scale = float(np.sqrt(abs(np.linalg.det(matrix))) * 3600.0) if np.all(np.isfinite(matrix)) else 0.0
    return scale if 0.01 < scale < 200 else None

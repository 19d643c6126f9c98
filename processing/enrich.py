"""Catalogue enrichment: what each detected source is, and what is notable in the field.

One request per catalogue per image, never one per source:

- SIMBAD (``basic``), VSX (VizieR ``B/vsx/vsx``) and Milliquas (VizieR
  ``VII/294``): the detections (row number, RA, Dec) are uploaded to the
  catalogue's TAP service and joined there in ADQL (``TAP_UPLOAD``); the
  answer holds only the pairs closer than the match radius.
- SkyBoT: one cone search over the field at mid-exposure.
- Astro-COLIBRI: one cone search over the field and a time window around
  the observation.

Matches are one-to-one: a source and a catalogue object are paired when each
is the other's nearest within the radius.  The radius scales with the
astrometric uncertainty (``match_radius_arcsec``).

A service that is down, slow or answers nonsense never fails the reduction:
its ``Outcome`` says 'unavailable' and why, its columns stay empty, and the
image records it in ``enrichment_missing`` so enrichment can be re-run.
"""
import io
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from astropy import units as u
from astropy.constants import au
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time

from .crossmatch import one_to_one, pairs as close_pairs, separation_arcsec
from .net import Budget, ServiceUnavailable, TimeoutSession, reason, with_budget
from .refcat import propagate

#: enrichment columns of the source table: name -> empty value
COLUMNS = {
    "simbad_id": "", "simbad_otype": "",
    "vsx_name": "", "vsx_type": "", "vsx_period": np.nan,
    "milliquas_name": "", "milliquas_type": "", "milliquas_z": np.nan,
    "skybot_name": "", "skybot_class": "",
    "colibri_name": "",
}
SERVICES = ("simbad", "vsx", "milliquas", "skybot", "colibri")
#: match radius: this many sigma of the combined position error, within limits (arcsec)
MATCH_SIGMA, MIN_RADIUS, MAX_RADIUS = 3.0, 1.0, 10.0
#: astrometric error assumed when the WCS could not be refined (arcsec)
UNREFINED_ERROR = 1.0
#: fastest proper motion the upload join allows for (arcsec/yr) and the most
#: it widens the join for it (arcsec): moving stars are matched at the epoch
MAX_PROPER_MOTION, MAX_PM_WIDENING = 0.5, 15.0
#: an alert position is tied to a source only when it is this good (arcsec)
ALERT_MAX_ERROR = 10.0


@dataclass(frozen=True)
class TapCatalogue:
    """A catalogue joined on its TAP service; columns in the service's names."""
    name: str
    ra: str
    dec: str
    #: source-table column -> catalogue column; ``id_alias`` names the identifier
    fields: dict
    id_alias: str
    #: typical position error of the catalogue at our epochs (arcsec; no proper motion applied)
    pos_err_arcsec: float
    #: notable-object kind for the image's list; None = not listed
    kind: str | None = None
    type_alias: str | None = None
    redshift_alias: str | None = None
    mag: str | None = None
    #: proper-motion columns (mas/yr, RA one times cos Dec) of positions at ``epoch`` (Julian year)
    pm: tuple | None = None
    epoch: float = 2000.0


SIMBAD = TapCatalogue("simbad", "ra", "dec", {"simbad_id": "main_id", "simbad_otype": "otype"}, "simbad_id", 0.5,
                      pm=("pmra", "pmdec"))
VSX = TapCatalogue("vsx", "RAJ2000", "DEJ2000", {"vsx_name": "Name", "vsx_type": "Type", "vsx_period": "Period"},
                   "vsx_name", 1.0, kind="variable star", type_alias="vsx_type")
MILLIQUAS = TapCatalogue("milliquas", "RAJ2000", "DEJ2000",
                         {"milliquas_name": "Name", "milliquas_type": "Type", "milliquas_z": "z"},
                         "milliquas_name", 1.0, kind="quasar", type_alias="milliquas_type",
                         redshift_alias="milliquas_z", mag="Rmag")
TAP_CATALOGUES = {c.name: c for c in (SIMBAD, VSX, MILLIQUAS)}


@dataclass
class Outcome:
    service: str
    status: str = "disabled"        # ok | unavailable | disabled
    message: str = ""
    requests: int = 0
    seconds: float = 0.0
    matched: int = 0
    in_field: int = 0


@dataclass(frozen=True)
class Field:
    """Where and when: the frame's centre and radius (deg), mid-exposure,
    the observer, and how good the astrometry is."""
    ra: float
    dec: float
    radius_deg: float
    time_mid: Time
    astrometric_rms_arcsec: float = np.nan
    site: tuple | None = None              # (lat deg, lon deg, height m)
    observatory_code: str | None = None


def empty_columns(n):
    return {name: (np.full(n, np.nan) if isinstance(value, float) else np.full(n, "", dtype=object))
            for name, value in COLUMNS.items()}


def enrich(ra, dec, field, config, log=print, session_factory=None):
    """Cross-identify the sources at (ra, dec) (deg, arrays) with every enabled
    service, the services queried side by side (the slowest sets the wall
    time).  Returns (columns, notable, outcomes): the ``COLUMNS`` arrays, a
    list of notable objects (dicts) and an ``Outcome`` per service."""
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    columns = empty_columns(len(ra))
    notable, outcomes = [], {}
    enabled = [name for name in SERVICES if (config.enrichment.get(name) or {}).get("enabled", False)]
    with ThreadPoolExecutor(max_workers=max(1, len(enabled))) as pool:
        futures = {name: pool.submit(_query, name, config.enrichment[name], ra, dec, field,
                                     session_factory or TimeoutSession) for name in enabled}
    for name in SERVICES:
        if name not in futures:
            outcomes[name] = Outcome(name)
            continue
        outcome, found, details = futures[name].result()
        if details:
            log(details)
        if found is not None:
            outcome.matched, outcome.in_field = _apply(found, columns, notable)
        outcomes[name] = outcome
        log(_describe(outcome, config.enrichment[name]))
    return columns, notable, outcomes


def _query(name, options, ra, dec, field, session_factory):
    """One service: (Outcome, _Found or None, traceback text or '')."""
    outcome = Outcome(name)
    start = time.monotonic()
    found, details = None, ""
    try:
        if name in TAP_CATALOGUES:
            found, attempts = _tap_crossmatch(TAP_CATALOGUES[name], options, ra, dec, field, session_factory)
        elif name == "skybot":
            found, attempts = _skybot(options, ra, dec, field, session_factory)
        else:
            found, attempts = _colibri(options, ra, dec, field, session_factory)
    except ServiceUnavailable as exc:
        outcome.status, outcome.message, outcome.requests = "unavailable", str(exc), exc.attempts
    except Exception as exc:            # a bad answer must not fail the reduction
        details = traceback.format_exc().rstrip()
        outcome.status, outcome.message, outcome.requests = "unavailable", f"unreadable answer: {reason(exc)}", 1
    else:
        outcome.status, outcome.requests = "ok", attempts
    outcome.seconds = round(time.monotonic() - start, 3)
    return outcome, found, details


def _describe(outcome, options):
    where = options.get("url", "")
    if outcome.status == "ok":
        return (f"{outcome.service}: {outcome.matched} sources matched, {outcome.in_field} objects listed"
                f" ({outcome.requests} request(s), {outcome.seconds:.2f} s, {where})")
    return f"warning: {outcome.service} unavailable after {outcome.seconds:.1f} s: {outcome.message} ({where})"


@dataclass
class _Found:
    """One service's answer: values for matched sources and notable objects."""
    source_index: np.ndarray
    values: dict                 # column -> array aligned with source_index
    notable: list


def _apply(found, columns, notable):
    for name, values in found.values.items():
        columns[name][found.source_index] = values
    notable.extend(found.notable)
    return len(found.source_index), len(found.notable)


# ---- matching -----------------------------------------------------------------
def match_radius_arcsec(astrometric_rms_arcsec, catalogue_err_arcsec):
    """``MATCH_SIGMA`` times the source's and the catalogue's position errors
    added in quadrature, kept within [MIN_RADIUS, MAX_RADIUS] arcsec (the
    catalogue error may be an array: one radius per object)."""
    astrom = astrometric_rms_arcsec if np.isfinite(astrometric_rms_arcsec) else UNREFINED_ERROR
    radius = np.clip(MATCH_SIGMA * np.hypot(astrom, catalogue_err_arcsec), MIN_RADIUS, MAX_RADIUS)
    return float(radius) if np.ndim(radius) == 0 else radius


# ---- TAP upload joins (SIMBAD, VSX, Milliquas) --------------------------------
def upload_adql(catalogue, table, radius_deg):
    """ADQL joining the uploaded sources (TAP_UPLOAD.rapas: row_id, ra, dec)
    with ``table`` within ``radius_deg``."""
    c = catalogue
    extra = "".join(f", c.{column} AS {alias}" for alias, column in c.fields.items())
    if c.mag:
        extra += f", c.{c.mag} AS cat_mag"
    if c.pm:
        extra += f", c.{c.pm[0]} AS cat_pmra, c.{c.pm[1]} AS cat_pmdec"
    return (f"SELECT u.row_id, c.{c.ra} AS cat_ra, c.{c.dec} AS cat_dec{extra}"
            f" FROM TAP_UPLOAD.rapas AS u JOIN {table} AS c"
            f" ON 1=CONTAINS(POINT('ICRS', c.{c.ra}, c.{c.dec}), CIRCLE('ICRS', u.ra, u.dec, {radius_deg:.8f}))")


def _tap_crossmatch(catalogue, options, ra, dec, field, session_factory):
    """Upload join, then (proper motion applied) one-to-one within the radius."""
    import pyvo
    radius = match_radius_arcsec(field.astrometric_rms_arcsec, catalogue.pos_err_arcsec)
    years = field.time_mid.jyear - catalogue.epoch
    widening = min(MAX_PROPER_MOTION * abs(years), MAX_PM_WIDENING) if catalogue.pm else 0.0
    upload = Table({"row_id": np.arange(len(ra), dtype=np.int32), "ra": ra, "dec": dec})
    adql = upload_adql(catalogue, options["table"], (radius + widening) / 3600.0)

    def attempt(seconds_left):
        service = pyvo.dal.TAPService(options["url"], session=session_factory(seconds_left))
        return service.run_sync(adql, uploads={"rapas": _binary_votable(upload)},
                                maxrec=50 * len(ra) + 1000).to_table()

    pairs, attempts = with_budget(Budget.from_config(options), attempt)
    pairs = _lower_case(pairs)
    source = np.asarray(pairs["row_id"], int)
    cat_ra, cat_dec = (_at_epoch(pairs, catalogue.epoch, field.time_mid.jyear) if catalogue.pm
                       else (np.asarray(pairs["cat_ra"], float), np.asarray(pairs["cat_dec"], float)))
    dist = separation_arcsec(ra[source], dec[source], cat_ra, cat_dec)
    near = np.flatnonzero(dist <= radius)
    keep = near[one_to_one(source[near], _text(pairs[catalogue.id_alias])[near], dist[near])]
    pairs, source = pairs[keep], source[keep]
    pairs["cat_ra"], pairs["cat_dec"], pairs["dist_arcsec"] = cat_ra[keep], cat_dec[keep], dist[keep]
    values = {alias: _column_values(pairs[alias], COLUMNS[alias]) for alias in catalogue.fields}
    return _Found(source, values, _listed(catalogue, pairs, values, source)), attempts


def _at_epoch(pairs, epoch, jyear):
    """Catalogue positions at ``jyear`` from their proper motions (missing: none)."""
    pmra, pmdec = (np.nan_to_num(_column_values(pairs[c], np.nan)) for c in ("cat_pmra", "cat_pmdec"))
    return propagate(pairs["cat_ra"], pairs["cat_dec"], pmra, pmdec, jyear - epoch)


def _listed(catalogue, pairs, values, source):
    """The matched objects of a catalogue of notable kinds, for the image's list."""
    if not catalogue.kind:
        return []
    c = catalogue
    return [dict(catalogue=c.name, name=str(values[c.id_alias][k]), kind=c.kind,
                 object_type=str(values[c.type_alias][k]) if c.type_alias else "",
                 ra=float(pairs["cat_ra"][k]), dec=float(pairs["cat_dec"][k]),
                 mag=_float(pairs["cat_mag"][k]) if c.mag else None,
                 redshift=_float(values[c.redshift_alias][k]) if c.redshift_alias else None,
                 source_num=int(source[k]) + 1, separation_arcsec=float(pairs["dist_arcsec"][k]))
            for k in range(len(pairs))]


def _binary_votable(table):
    """The upload as a BINARY2-serialised VOTable: a third of TABLEDATA's size
    (pyvo would send TABLEDATA; services cap synchronous uploads, DaCHS at 500 kB)."""
    from astropy.io.votable import from_table
    buffer = io.BytesIO()
    from_table(table).to_xml(buffer, tabledata_format="binary2")
    buffer.seek(0)
    return buffer


def _lower_case(table):
    """Column names in lower case (TAP services differ in what they return)."""
    for name in table.colnames:
        if name != name.lower():
            table.rename_column(name, name.lower())
    return table


def _text(column):
    values = np.ma.filled(np.ma.asarray(column).astype(str), "")
    return np.char.strip(values.astype(str))


def _column_values(column, empty):
    if isinstance(empty, float):
        return np.ma.filled(np.ma.asarray(column, dtype=float), np.nan)
    return _text(column).astype(object)


def _floats(texts):
    """Numbers from text fields, NaN where there is none ('-', '')."""
    return np.array([np.nan if (v := _float(text)) is None else v for text in texts], dtype=float)


def _float(value):
    try:
        value = float(value)
    except (TypeError, ValueError, np.ma.MaskError):
        return None
    return value if np.isfinite(value) else None


# ---- SkyBoT -----------------------------------------------------------------------
def _skybot(options, ra, dec, field, session_factory):
    """Known solar-system objects in the field at mid-exposure (SkyBoT cone
    search, text output).  Positions are for the observatory code when
    known; otherwise SkyBoT's geocentric positions are moved to the site."""
    params = {"-ep": f"{field.time_mid.utc.jd:.6f}", "-ra": f"{field.ra:.6f}", "-dec": f"{field.dec:.6f}",
              "-rd": f"{field.radius_deg:.5f}", "-mime": "text", "-output": "basic",
              "-loc": field.observatory_code or "500", "-filter": "120", "-objFilter": "111",
              "-refsys": "EQJ2000", "-from": "RAPAS"}

    def attempt(seconds_left):
        response = session_factory(seconds_left).get(options["url"], params=params)
        response.raise_for_status()
        return parse_skybot(response.text)

    objects, attempts = with_budget(Budget.from_config(options), attempt)
    if len(objects) and field.observatory_code is None and field.site is not None:
        objects["ra"], objects["dec"] = topocentric(objects["ra"], objects["dec"], objects["dg_au"],
                                                    field.site, field.time_mid)
    index, sep = _nearest_sources(objects["ra"], objects["dec"], ra, dec,
                                  match_radius_arcsec(field.astrometric_rms_arcsec, np.asarray(objects["err_arcsec"])))
    matched = index >= 0
    values = {"skybot_name": np.asarray(objects["name"], dtype=object)[matched],
              "skybot_class": np.asarray(objects["class"], dtype=object)[matched]}
    notable = [dict(catalogue="skybot", name=str(o["name"]),
                    kind="comet" if str(o["class"]).lower().startswith("comet") else "minor planet",
                    object_type=str(o["class"]), ra=float(o["ra"]), dec=float(o["dec"]), mag=_float(o["vmag"]),
                    redshift=None, error_arcsec=_float(o["err_arcsec"]))
               for o in objects]
    return _Found(index[matched], values, _tie_to_sources(notable, index, sep)), attempts


def _tie_to_sources(notable, index, sep):
    """Each listed object's matched source (1-based number) and distance, or None."""
    for entry, k, d in zip(notable, index, sep):
        entry["source_num"] = int(k) + 1 if k >= 0 else None
        entry["separation_arcsec"] = float(d) if k >= 0 else None
    return notable


SKYBOT_COLUMNS = {"Num": "number", "Name": "name", "RA(h)": "ra", "DE(deg)": "dec", "Class": "class",
                  "Mv": "vmag", "Err(arcsec)": "err_arcsec", "Dg(ua)": "dg_au"}


def parse_skybot(text):
    """SkyBoT's text answer: '# Flag: 1' (found), 0 (nothing) or -1 (error),
    a '# Num | Name | RA(h) | DE(deg) | ...' header and '|'-separated rows."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# Flag:"):
        raise ValueError(f"not a SkyBoT answer: {' '.join(lines[:1])[:120]!r}")
    flag = int(lines[0].split(":")[1])
    if flag == -1:
        raise ValueError("SkyBoT error: " + " ".join(line for line in lines[1:] if not line.startswith("#"))[:200])
    empty = Table(names=list(SKYBOT_COLUMNS.values()), dtype=[object, object, float, float, object,
                                                               float, float, float])
    if flag == 0:
        return empty
    header = next(line for line in lines if line.startswith("# Num"))
    names = [h.strip() for h in header[1:].split("|")]
    rows = [[v.strip() for v in line.split("|")] for line in lines if line.strip() and not line.startswith("#")]
    if not rows:
        return empty
    data = dict(zip(names, zip(*rows)))
    coords = SkyCoord(list(data["RA(h)"]), list(data["DE(deg)"]), unit=(u.hourangle, u.deg))
    table = Table({"number": data["Num"], "name": data["Name"], "ra": coords.ra.deg, "dec": coords.dec.deg,
                   "class": data["Class"]})
    for src, dst in (("Mv", "vmag"), ("Err(arcsec)", "err_arcsec"), ("Dg(ua)", "dg_au")):
        table[dst] = _floats(data.get(src, [None] * len(rows)))
    table["err_arcsec"] = np.where(np.isfinite(table["err_arcsec"]), table["err_arcsec"], 1.0)
    return table


def topocentric(ra, dec, distance_au, site, time):
    """Geocentric (ra, dec) of bodies at ``distance_au`` seen from ``site``
    (lat, lon deg, height m) at ``time``: the diurnal parallax, up to 9
    arcsec for a body 1 au away.  The observer's GCRS position comes from
    the IAU 2006/2000A celestial-to-terrestrial matrix with UT1 = UTC and
    no polar motion (errors well under 0.1 arcsec in the shift)."""
    import erfa
    lat, lon, height = site
    itrs = erfa.gd2gc(1, np.radians(lon), np.radians(lat), height) / au.to_value(u.m)
    utc = time.utc
    tt = utc.tt
    c2t = erfa.c2t06a(tt.jd1, tt.jd2, utc.jd1, utc.jd2, 0.0, 0.0)
    obs = c2t.T @ itrs
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    d = np.where(np.isfinite(distance_au), distance_au, np.inf)
    unit = np.array([np.cos(dec_r) * np.cos(ra_r), np.cos(dec_r) * np.sin(ra_r), np.sin(dec_r)])
    topo = np.where(np.isfinite(d), unit * d - obs[:, None], unit)
    return (np.degrees(np.arctan2(topo[1], topo[0])) % 360.0,
            np.degrees(np.arctan2(topo[2], np.hypot(topo[0], topo[1]))))


def _nearest_sources(obj_ra, obj_dec, ra, dec, radius_arcsec):
    """For each object, its one-to-one source within the object's own radius
    (-1 if none) and the separation (arcsec)."""
    n = len(obj_ra)
    src, obj, sep = close_pairs(ra, dec, obj_ra, obj_dec, radius_arcsec)
    keep = one_to_one(src, obj, sep)
    index, separation = np.full(n, -1), np.full(n, np.nan)
    index[obj[keep]], separation[obj[keep]] = src[keep], sep[keep]
    return index, separation


# ---- Astro-COLIBRI ------------------------------------------------------------------
def _colibri(options, ra, dec, field, session_factory):
    """Transients under follow-up (alerts and sources) in the field within
    [t_mid - days_before, t_mid + days_after]; the API key is the 'uid'."""
    t = field.time_mid
    body = {"filter": None,
            "time_range": {"min": (t - options.get("days_before", 30.0) * u.day).utc.isot,
                           "max": (t + options.get("days_after", 1.0) * u.day).utc.isot},
            "properties": {"type": "cone", "position": {"ra": field.ra, "dec": field.dec},
                           "radius": field.radius_deg}}
    if options.get("uid"):
        body["uid"] = options["uid"]

    def attempt(seconds_left):
        response = session_factory(seconds_left).post(options["url"], json=body)
        response.raise_for_status()
        return parse_colibri(response.json())

    events, attempts = with_budget(Budget.from_config(options), attempt)
    err = np.array([e["error_arcsec"] if e["error_arcsec"] is not None else np.inf for e in events])
    radius = np.where(err <= ALERT_MAX_ERROR, match_radius_arcsec(field.astrometric_rms_arcsec, err), -1.0)
    index, sep = _nearest_sources([e["ra"] for e in events], [e["dec"] for e in events], ra, dec, radius)
    matched = index >= 0
    names = np.array([e["name"] for e in events], dtype=object)
    return _Found(index[matched], {"colibri_name": names[matched]}, _tie_to_sources(events, index, sep)), attempts


def parse_colibri(answer):
    """Alerts ('voevents') and sources of an Astro-COLIBRI cone search, with
    a position; their 'err' is the position error in degrees."""
    if not isinstance(answer, dict):
        raise ValueError("not an Astro-COLIBRI answer")
    events = []
    for item in list(answer.get("voevents") or []) + list(answer.get("sources") or []):
        if item.get("ra") is None or item.get("dec") is None:
            continue
        err = _float(item.get("err"))
        events.append(dict(
            catalogue="colibri",
            name=str(item.get("source_name") or item.get("discoverer_internal_name") or item.get("trigger_id")),
            kind="transient", object_type=str(item.get("type") or item.get("classification") or ""),
            ra=float(item["ra"]), dec=float(item["dec"]), mag=None, redshift=None,
            error_arcsec=err * 3600.0 if err is not None else None, event_time=item.get("time")))
    return events


def outcome_summary(outcomes):
    """For summary.json: the outcome of every service, and the missing ones."""
    return ({name: asdict(o) for name, o in outcomes.items()},
            [name for name, o in outcomes.items() if o.status == "unavailable"])


def requests_session_factory(counter=None):
    """Sessions with a default timeout; ``counter`` (a list) gets every request's URL."""
    def make(timeout):
        session = TimeoutSession(timeout)
        if counter is not None:
            session.hooks["response"].append(lambda r, *a, **k: counter.append(r.request.url))
        return session
    return make


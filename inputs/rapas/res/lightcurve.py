"""Alert targets and their light curves in the archive (DaCHS side).

- ``measure_image``: at ingestion, in the ingestion's transaction, forced
  photometry of every active target inside the new image's footprint;
- ``add_target``, ``edit_target``, ``retire_target``: the members' target
  service (``rapas/q/target_edit``), each one transaction;
- ``backfill``: a target added (or moved) later is measured on every
  archived image that covers it and has no row for it yet, in batches, its
  progress in ``rapas.targets.backfill``; one that died with its process
  (a server restart) is run again by the next ingestion
  (``resume_stalled_backfills``);
- ``add_alert_targets``: Astro-COLIBRI alerts with a position error of at
  most ``ALERT_MAX_ERROR_ARCSEC`` found by a frame's enrichment become
  targets (once: deduplicated by name and position).

Ingestions and target changes meet at one PostgreSQL advisory lock: an
ingestion measures its image holding it shared, until it commits; adding,
moving or backfilling a target takes it exclusively.  So a target
committed while an image is being ingested waits for that image, and
either the ingestion sees the target or the backfill sees the image: no
(target, image) pair is missed or measured twice.

The measurement itself is the pipeline's ``forced.measure`` (linked
beside this file), reading the archived ``calibrated.fits`` by sections
and ``photmodel.fits``; an image ingested before forced photometry
existed gets a row saying so.
"""
import json
import os
import re
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

from gavo import api

contract, _ = api.loadPythonModule("contract", relativeTo=__file__)
forced, _ = api.loadPythonModule("forced", relativeTo=__file__)
siteconfig, _ = api.loadPythonModule("siteconfig", relativeTo=__file__)

RD_ID = "rapas/q"
#: pg_advisory_xact_lock key shared by ingestions and target changes
LOCK_KEY = 0x52415041                 # 'RAPA'
KINDS = ("GRB", "SN", "KN", "nova", "variable", "other")
#: alerts with a larger position error are not followed automatically
ALERT_MAX_ERROR_ARCSEC = 10.0
#: an active target within this distance (or the new one's error) is the same object
SAME_POSITION_ARCSEC = 2.0
#: images measured per backfill transaction
BACKFILL_BATCH = 50
NAME_PATTERN = re.compile(r"^[\w .+:/()#*'-]{1,64}$")


class TargetError(Exception):
    """A target request that cannot be carried out; its text is the one line to show."""


def _now():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def target_did(name):
    """The target's DataLink identifier (its light curve's publisher DID)."""
    from gavo.rscdef.common import getStandardPubDID
    return getStandardPubDID("rapas/targets/" + urllib.parse.quote(name, safe=""))


def name_from_did(pub_did):
    """The target name in a ``target_did``; None for another identifier."""
    accref = pub_did.split("?", 1)[-1]
    if not accref.startswith("rapas/targets/"):
        return None
    return urllib.parse.unquote(accref[len("rapas/targets/"):])


# ---- measuring ----------------------------------------------------------------
def _product_dir(accref):
    from gavo import base
    return Path(base.getConfig("inputsDir")) / os.path.dirname(accref)


def _rows(summary, product_dir, targets, min_snr):
    """Light-curve rows of the ``targets`` (name, ra, dec, alert_mjd) on one
    image, a magnitude from S/N ``min_snr``, the image's provenance on each;
    targets off its pixels get none."""
    if not targets:
        return []
    names, ra, dec, alert = zip(*targets)
    common = _provenance(summary)
    if not (product_dir / forced.MODEL_NAME).is_file():
        return [dict(common, target=n, t_alert=_since(summary, a), measured_at=_now(),
                     note="archived before forced photometry: no photometric model")
                for n, a in zip(names, alert)]
    m = forced.measure(product_dir, ra, dec, min_snr)
    rows = []
    for k, name in enumerate(names):
        if not m["on_frame"][k]:
            continue
        row = dict(common, target=name, t_alert=_since(summary, alert[k]), measured_at=_now(),
                   x_image=float(m["x"][k]) + 1.0, y_image=float(m["y"][k]) + 1.0)
        for key in ("flux", "flux_err", "snr", "mag", "mag_err", "mag_calib_err", "mag_limit", "flux_ap",
                    "flux_ap_err", "sky", "noise", "calibration_colour"):
            row[key] = _finite(m[key][k])
        row["method"] = str(m["method"][k]) or None
        row["note"] = _note(summary, row)
        rows.append(row)
    return rows


def detection_snr():
    """The S/N from which a forced measurement gets a magnitude:
    ``forced_detection_snr`` in the site configuration
    (``siteconfig.site_config``), else ``forced.DETECTION_SNR``."""
    import tomllib
    path = siteconfig.site_config()
    if path is None:
        return forced.DETECTION_SNR
    with open(path, "rb") as f:
        return float(tomllib.load(f).get("forced_detection_snr", forced.DETECTION_SNR))


def _note(summary, row):
    if summary.calib_level != 2:
        return "image not photometrically calibrated (calibration level 1): no calibrated flux"
    if row["flux"] is None:
        return "no measurement: the position is on masked pixels or too close to the edge"
    return None


def _since(summary, alert_mjd):
    return None if alert_mjd is None else summary.mjd_mid - alert_mjd


def _finite(value):
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def _provenance(summary):
    """The image's columns of a light-curve row."""
    return dict(obs_id=summary.obs_id, mjd=summary.mjd_mid, filter=summary.filter,
                observer=summary.observer, telescope=summary.telescope, instrument=summary.instrument,
                exptime=summary.exptime, airmass=summary.airmass, fwhm=summary.fwhm_arcsec,
                zero_point=_finite(summary.zero_point), zero_point_err=_finite(summary.zero_point_err),
                colour_term=_finite(summary.colour_term),
                calibration_intrinsic_rms=_finite(summary.calibration_intrinsic_rms),
                calibration_band=summary.calibration_band, refcat=summary.refcat,
                image_limit=_finite(summary.limiting_mag_5sigma), pipeline_version=summary.pipeline_version)


def _store(conn, rows):
    """Insert light-curve rows (dicts; absent columns are NULL)."""
    if rows:
        rd = api.getRD(RD_ID)
        names = [column.name for column in rd.getById("lightcurves").columns]
        api.makeData(rd.getById("import_forced"), forceSource=[{n: row.get(n) for n in names} for row in rows],
                     connection=conn, parseOptions=api.getParseOptions(validateRows=True), runCommit=False)


def _covering_targets(conn, obs_id):
    return [tuple(r) for r in conn.query(
        "SELECT t.name, t.ra, t.dec, t.alert_mjd FROM rapas.targets AS t, rapas.images AS i"
        " WHERE i.obs_id=%(o)s AND t.retired IS NULL"
        " AND spoint(RADIANS(t.ra), RADIANS(t.dec)) @ i.coverage", {"o": obs_id})]


def measure_image(conn, summary, product_dir):
    """Forced photometry of the active targets on a newly ingested image, in
    the ingestion's transaction (``conn``), its image row already in."""
    conn.execute("SELECT pg_advisory_xact_lock_shared(%(k)s)", {"k": LOCK_KEY})
    _store(conn, _rows(summary, Path(product_dir), _covering_targets(conn, summary.obs_id), detection_snr()))


# ---- targets ------------------------------------------------------------------
def _check(name, ra, dec, pos_error, kind):
    """The one line saying what is wrong with a target's fields, or None."""
    if not name or not name.strip():
        return "a target needs a name"
    if not NAME_PATTERN.match(name.strip()):
        return (f"target name {name[:80]!r} is not usable: up to 64 letters, digits, spaces and . + - : / ( ) # *"
                " ' characters")
    if ra is None or dec is None:
        return "a target needs a position: ra and dec in degrees (ICRS)"
    if not 0.0 <= ra < 360.0:
        return f"ra={ra} is out of range: right ascension is 0 <= ra < 360 degrees"
    if not -90.0 <= dec <= 90.0:
        return f"dec={dec} is out of range: declination is -90 <= dec <= 90 degrees"
    if pos_error is not None and not 0.0 <= pos_error <= 3600.0:
        return f"pos_error={pos_error} is out of range: 0 to 3600 arcsec"
    if kind is not None and kind not in KINDS:
        return f"kind={kind!r} is not one of {', '.join(KINDS)}"
    return None


def _same_position(conn, ra, dec, radius_arcsec, exclude=None):
    """Name and distance (arcsec) of an active target within ``radius_arcsec`` of (ra, dec), or None."""
    rows = list(conn.query(
        "SELECT name, DEGREES(spoint(RADIANS(ra), RADIANS(dec)) <-> spoint(RADIANS(%(ra)s), RADIANS(%(dec)s)))"
        " * 3600 AS d FROM rapas.targets WHERE retired IS NULL AND name IS DISTINCT FROM %(x)s"
        " AND spoint(RADIANS(ra), RADIANS(dec)) @ scircle(spoint(RADIANS(%(ra)s), RADIANS(%(dec)s)),"
        " RADIANS(%(r)s / 3600.0)) ORDER BY d LIMIT 1", {"ra": ra, "dec": dec, "r": radius_arcsec, "x": exclude}))
    return tuple(rows[0]) if rows else None


def _existing(conn, name):
    rows = list(conn.queryToDicts("SELECT * FROM rapas.targets WHERE name=%(n)s", {"n": name}))
    return rows[0] if rows else None


def add_target(name, ra, dec, pos_error=None, kind=None, alert_mjd=None, origin=None, user=None):
    """Insert a target (one transaction, the lock held exclusively); raises
    ``TargetError`` with the reason when it cannot.  Returns its row."""
    from gavo import base
    problem = _check(name, ra, dec, pos_error, kind)
    if problem:
        raise TargetError(problem)
    name = " ".join(name.split())
    with base.getWritableAdminConn() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": LOCK_KEY})
        old = _existing(conn, name)
        if old:
            state = "retired" if old["retired"] else "active"
            raise TargetError(f"a target named {name!r} already exists ({state}, added by {old['added_by']}):"
                              " use action=edit to change it")
        near = _same_position(conn, ra, dec, max(SAME_POSITION_ARCSEC, pos_error or 0.0))
        if near:
            raise TargetError(f"target {near[0]!r} is already at this position ({near[1]:.1f} arcsec away)")
        now = _now()
        conn.execute(
            "INSERT INTO rapas.targets (name, ra, dec, pos_error, kind, alert_mjd, origin, added_by, created,"
            " modified, target_did, backfill, backfill_at) VALUES (%(name)s, %(ra)s, %(dec)s, %(pos_error)s,"
            " %(kind)s, %(alert_mjd)s, %(origin)s, %(user)s, %(now)s, %(now)s, %(did)s, 'pending', %(now)s)",
            dict(name=name, ra=ra, dec=dec, pos_error=pos_error, kind=kind or "other", alert_mjd=alert_mjd,
                 origin=origin or "member", user=user, now=now, did=target_did(name)))
        return _existing(conn, name)


def edit_target(name, user, **changes):
    """Change a target's fields (None: unchanged); a new position deletes
    its light curve, which the backfill then measures again.  Returns
    (row, whether it moved)."""
    from gavo import base
    with base.getWritableAdminConn() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": LOCK_KEY})
        old = _existing(conn, name)
        if not old:
            raise TargetError(f"there is no target named {name!r}")
        new = {k: (v if v is not None else old[k]) for k, v in changes.items()}
        problem = _check(name, new["ra"], new["dec"], new["pos_error"], new["kind"])
        if problem:
            raise TargetError(problem)
        moved = (new["ra"], new["dec"]) != (old["ra"], old["dec"])
        if moved:
            near = _same_position(conn, new["ra"], new["dec"], SAME_POSITION_ARCSEC, exclude=name)
            if near:
                raise TargetError(f"target {near[0]!r} is already at this position ({near[1]:.1f} arcsec away)")
            conn.execute("DELETE FROM rapas.lightcurves WHERE target=%(n)s", {"n": name})
        conn.execute(
            "UPDATE rapas.targets SET ra=%(ra)s, dec=%(dec)s, pos_error=%(pos_error)s, kind=%(kind)s,"
            " alert_mjd=%(alert_mjd)s, modified=%(now)s, modified_by=%(user)s, retired=NULL,"
            " backfill=CASE WHEN %(moved)s THEN 'pending' ELSE backfill END,"
            " backfill_at=CASE WHEN %(moved)s THEN %(now)s ELSE backfill_at END WHERE name=%(name)s",
            dict(new, name=name, now=_now(), user=user, moved=moved))
        if changes.get("alert_mjd") is not None:
            conn.execute("UPDATE rapas.lightcurves AS l SET t_alert=l.mjd - %(a)s WHERE target=%(n)s",
                         {"a": changes["alert_mjd"], "n": name})
        return _existing(conn, name), moved or old["retired"] is not None


def retire_target(name, user):
    """Stop measuring a target on new images (its light curve stays)."""
    from gavo import base
    with base.getWritableAdminConn() as conn:
        if not _existing(conn, name):
            raise TargetError(f"there is no target named {name!r}")
        conn.execute("UPDATE rapas.targets SET retired=%(now)s, modified=%(now)s, modified_by=%(user)s"
                     " WHERE name=%(n)s AND retired IS NULL", {"now": _now(), "user": user, "n": name})
        return _existing(conn, name)


# ---- backfill -----------------------------------------------------------------
def _missing_images(conn, name):
    return [tuple(r) for r in conn.query(
        "SELECT i.obs_id, i.accref FROM rapas.images AS i, rapas.targets AS t WHERE t.name=%(n)s"
        " AND spoint(RADIANS(t.ra), RADIANS(t.dec)) @ i.coverage AND NOT EXISTS"
        " (SELECT 1 FROM rapas.lightcurves AS l WHERE l.obs_id=i.obs_id AND l.target=%(n)s)"
        " ORDER BY i.t_min", {"n": name})]


def backfill(name):
    """Measure target ``name`` on every archived image covering it that has
    no row for it, ``BACKFILL_BATCH`` images per transaction; the progress
    ('measuring: k of n archived images', then 'done: ...' or 'failed: ...')
    is in rapas.targets.backfill.  Returns the number of rows added."""
    from gavo import base
    with base.getTableConn() as conn:
        target = _existing(conn, name)
        images = _missing_images(conn, name)
    if target is None:
        return 0
    added, started = 0, time.monotonic()
    try:
        for start in range(0, len(images), BACKFILL_BATCH):
            _set_progress(name, f"measuring: {start} of {len(images)} archived images")
            rows = _measure_batch(name, target, images[start:start + BACKFILL_BATCH])
            added += rows
        _set_progress(name, f"done: {len(images)} archived images measured, {added} rows added, at"
                            f" {_now().isoformat(timespec='seconds')}Z ({time.monotonic() - started:.1f} s)")
    except Exception as exc:
        _set_progress(name, f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        raise
    return added


def _measure_batch(name, target, images):
    """One transaction: rows of the images not measured meanwhile (an
    ingestion may have replaced one), under the exclusive lock."""
    from gavo import base
    target_tuple = (name, target["ra"], target["dec"], target["alert_mjd"])
    min_snr = detection_snr()
    rows = []
    for obs_id, accref in images:
        product_dir = _product_dir(accref)
        try:
            summary = contract.Summary.from_dict(json.loads((product_dir / contract.SUMMARY_NAME).read_text()))
        except FileNotFoundError:             # withdrawn meanwhile
            continue
        rows += _rows(summary, product_dir, [target_tuple], min_snr)
    with base.getWritableAdminConn() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": LOCK_KEY})
        still_missing = {obs_id for obs_id, _ in _missing_images(conn, name)}
        rows = [row for row in rows if row["obs_id"] in still_missing]
        _store(conn, rows)
    return len(rows)


def _set_progress(name, text):
    from gavo import base
    with base.getWritableAdminConn() as conn:
        conn.execute("UPDATE rapas.targets SET backfill=%(t)s, backfill_at=%(now)s WHERE name=%(n)s",
                     {"t": text, "now": _now(), "n": name})


#: a backfill whose progress has not moved for this long died with its
#: process (a live one reports every BACKFILL_BATCH images, about a second)
STALLED_AFTER_S = 600


def resume_stalled_backfills():
    """Run again the backfills that died (a server restart): pending or
    measuring, their progress unchanged for ``STALLED_AFTER_S``; each
    measures only the images still missing.  Returns their names."""
    from gavo import base
    with base.getTableConn() as conn:
        names = [row[0] for row in conn.query(
            "SELECT name FROM rapas.targets WHERE retired IS NULL AND backfill NOT LIKE 'done%%'"
            " AND backfill NOT LIKE 'failed%%' AND COALESCE(backfill_at, created)"
            " < %(now)s - %(stall)s * INTERVAL '1 second'", {"now": _now(), "stall": STALLED_AFTER_S})]
    for name in names:
        backfill(name)
    return names


def backfill_in_background(name):
    """``backfill`` in a thread of this process (the server): the request
    that added the target returns at once."""
    def run():
        try:
            backfill(name)
        except Exception:
            from gavo import base
            base.ui.notifyError(f"backfill of target {name!r} failed")
    threading.Thread(target=run, name=f"rapas-backfill-{name}", daemon=True).start()


# ---- alerts found by the enrichment -----------------------------------------------
def add_alert_targets(summary):
    """Astro-COLIBRI alerts in the image's notable objects with a position
    error up to ``ALERT_MAX_ERROR_ARCSEC`` become targets unless one of that
    name or at that position exists; each new one is backfilled (this image
    included).  Returns the names added."""
    added = []
    for item in summary.notable_objects or []:
        error = item.get("error_arcsec")
        if item.get("catalogue") != "colibri" or error is None or error > ALERT_MAX_ERROR_ARCSEC:
            continue
        try:
            add_target(item["name"], float(item["ra"]) % 360.0, float(item["dec"]), float(error),
                       _alert_kind(item.get("object_type")), _mjd(item.get("event_time")), "Astro-COLIBRI",
                       f"enrichment of {summary.obs_id}")
        except TargetError:
            continue                           # known already, by name or position
        backfill(item["name"])
        added.append(item["name"])
    return added


def _alert_kind(object_type):
    text = (object_type or "").lower()
    for kind, words in (("GRB", ("grb", "gamma")), ("KN", ("kilonova", "gw")), ("SN", ("sn", "supernova")),
                        ("nova", ("nova",))):
        if any(word in text for word in words):
            return kind
    return "other"


def _mjd(iso):
    if not iso:
        return None
    from astropy.time import Time
    try:
        return float(Time(iso.replace("Z", ""), scale="utc").mjd)
    except ValueError:
        return None


# ---- the target service -------------------------------------------------------
def _alert_time(text):
    """MJD of an ISO 8601 UTC time or an MJD given as a number; raises TargetError."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    try:
        value = float(text)
    except ValueError:
        value = _mjd(text)
        if value is None:
            raise TargetError(f"alert_time={text[:40]!r} is neither an ISO 8601 UTC time nor an MJD") from None
    if not 0.0 < value < 100000.0:          # 1858 to 2132
        raise TargetError(f"alert_time={text[:40]!r} is not a plausible MJD")
    return value


def serve_request(output_table, inputTable, queryMeta):
    """The target service's core: add, edit or retire, then the target's row
    and what was done.  Refusals are one line (a DaCHS ValidationError)."""
    from gavo import base, rsc
    p = inputTable.getParamDict()
    name, user, action = (p.get("name") or "").strip(), queryMeta["user"], p.get("action") or "add"
    try:
        alert_mjd = _alert_time(p.get("alert_time"))
        if action == "add":
            row = add_target(name, p.get("ra"), p.get("dec"), p.get("pos_error"), p.get("kind"), alert_mjd,
                             p.get("origin"), user)
            backfill_in_background(row["name"])
            message = f"added {row['name']}; measuring it on the archived images in the background"
        elif action == "edit":
            if not name:
                raise TargetError("a target needs a name")
            row, remeasure = edit_target(name, user, ra=p.get("ra"), dec=p.get("dec"),
                                         pos_error=p.get("pos_error"), kind=p.get("kind"), alert_mjd=alert_mjd)
            message = f"changed {name}"
            if remeasure:
                backfill_in_background(name)
                message += "; measuring it again on the archived images in the background"
        else:
            row = retire_target(name, user)
            message = f"retired {name}: no longer measured on new images, its light curve stays"
    except TargetError as exc:
        raise base.ValidationError(str(exc), "name") from None
    columns = [column.name for column in output_table]
    return rsc.TableForDef(output_table, rows=[{c: row.get(c) for c in columns if c != "message"}
                                               | {"message": message}])


# ---- DataLink: the light curve of a target --------------------------------------
def descriptor_for(pub_did, descriptor_class, fault):
    """A DataLink descriptor for a target's light curve (``target_did``)."""
    from gavo import base
    name = name_from_did(pub_did)
    if name is None:
        return fault.NotFoundFault(pub_did, "not a RAPAS target identifier")
    with base.getTableConn() as conn:
        target = _existing(conn, name)
    if target is None:
        return fault.NotFoundFault(pub_did, f"there is no RAPAS target named {name!r}")
    descriptor = descriptor_class(pub_did, pub_did.split("?", 1)[-1], None, "application/x-votable+xml")
    descriptor.suppressAutoLinks = True
    descriptor.target = target
    return descriptor


def links_for(descriptor, absolute_url):
    """The light curve's DataLink rows."""
    did = urllib.parse.quote(descriptor.pubDID)
    target = descriptor.target
    name = target["name"]
    yield descriptor.makeLink(absolute_url(f"{RD_ID}/lcdl/dlget?ID={did}"),
                              contentType="application/x-votable+xml", semantics="#this",
                              description=f"Light curve of {name} (VOTable time series)")
    yield descriptor.makeLink(absolute_url(f"{RD_ID}/lcplot/dlget?ID={did}"), contentType="image/png",
                              semantics="#preview", description=f"Plot of the light curve of {name}")
    query = "SELECT * FROM rapas.lightcurves WHERE target='%s' ORDER BY mjd" % name.replace("'", "''")
    yield descriptor.makeLink(
        absolute_url("/tap/sync?LANG=ADQL&REQUEST=doQuery&QUERY=" + urllib.parse.quote(query)),
        contentType="application/x-votable+xml", semantics="#derivation",
        description=f"Light-curve rows of {name} with their calibration provenance (TAP)")
    yield descriptor.makeLink(absolute_url(f"{RD_ID}/web/static/target.html?name=" + urllib.parse.quote(name)),
                              contentType="text/html", semantics="#documentation",
                              description=f"The light curve of {name}: its page (plot and points)")
    pos = f"CIRCLE {target['ra']} {target['dec']} 0.0003"
    yield descriptor.makeLink(
        absolute_url(f"{RD_ID}/siap2/siap2.xml?POS=" + urllib.parse.quote(pos)),
        contentType="application/x-votable+xml", semantics="#progenitor",
        description=f"RAPAS images covering {name} (SIAP2)")


def _light_curve(name):
    from gavo import base
    with base.getTableConn() as conn:
        return list(conn.queryToDicts(
            "SELECT l.*, (o.em_min + o.em_max) / 2 AS wavelength FROM rapas.lightcurves AS l"
            " JOIN rapas.images AS i ON i.obs_id=l.obs_id LEFT JOIN ivoa.obscore AS o"
            " ON o.obs_id=i.obs_id WHERE l.target=%(n)s ORDER BY l.mjd", {"n": name}))


def time_series(descriptor, table_def):
    """The target's light curve as a DaCHS time-series table (//timeseries#phot-0)."""
    from gavo import rsc
    rows = _light_curve(descriptor.target["name"])
    bands = sorted({row["filter"] for row in rows if row["filter"]})
    wavelengths = [row["wavelength"] for row in rows if row["wavelength"] is not None]
    columns = [c.name for c in table_def.columns]
    table = rsc.TableForDef(table_def, rows=[
        {c: (row["mjd"] if c == "obs_time" else row["mag"] if c == "phot" else row.get(c)) for c in columns}
        for row in rows])
    table.setParam("target_name", descriptor.target["name"])
    table.setParam("ra", descriptor.target["ra"])
    table.setParam("dec", descriptor.target["dec"])
    table.setParam("filter_id", "RAPAS/" + "+".join(bands) if bands else None)
    table.setParam("effective_wavelength", sum(wavelengths) / len(wavelengths) if wavelengths else None)
    return rsc.wrapTable(table)


def plot_png(target):
    """PNG of the light curve: magnitude against days since the alert (MJD
    without an alert time), a colour per band and a marker per observer;
    upper limits as downward arrows at the limit."""
    import io
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    rows = _light_curve(target["name"])
    t0 = target["alert_mjd"] or 0.0
    for row in rows:
        row["t"] = row["mjd"] - t0
    figure = Figure(figsize=(7.0, 4.2), dpi=100)
    ax = figure.subplots()
    bands = sorted({row["filter"] or "?" for row in rows})
    observers = sorted({row["observer"] or "?" for row in rows})
    colours = dict(zip(bands, ("tab:green", "tab:blue", "tab:red", "tab:orange", "tab:purple", "tab:brown")))
    markers = dict(zip(observers, "osD^v<>phH*"))
    for band in bands:
        for observer in observers:
            points = [r for r in rows if (r["filter"] or "?") == band and (r["observer"] or "?") == observer]
            seen = [r for r in points if r["mag"] is not None]
            limits = [r for r in points if r["mag"] is None and r["mag_limit"] is not None]
            style = dict(color=colours.get(band, "k"), marker=markers.get(observer, "o"), linestyle="none")
            if seen:
                ax.errorbar([r["t"] for r in seen], [r["mag"] for r in seen],
                            yerr=[r["mag_err"] or 0.0 for r in seen], label=f"{band} {observer}", **style)
            if limits:
                ax.errorbar([r["t"] for r in limits], [r["mag_limit"] for r in limits], yerr=0.25,
                            uplims=False, lolims=True, alpha=0.6, markerfacecolor="none",
                            label=f"{band} {observer} (5σ limit)", **style)
    ax.invert_yaxis()
    ax.set_xlabel(f"days since the alert (MJD {t0:.4f})" if t0 else "MJD (UTC, mid-exposure)")
    ax.set_ylabel("magnitude")
    ax.set_title(f"{target['name']}: {len(rows)} images, RAPAS forced photometry")
    if rows:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no archived image covers this target yet", transform=ax.transAxes, ha="center")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# ---- keeping the targets over a rebuild of the tables ----------------------------
_KEPT = ("name", "ra", "dec", "pos_error", "kind", "alert_mjd", "origin", "added_by", "modified_by", "created",
         "modified", "retired")


def export_targets(path):
    """Write the targets (JSON, one per line); returns how many."""
    from gavo import base
    with base.getTableConn() as conn:
        rows = list(conn.queryToDicts("SELECT %s FROM rapas.targets ORDER BY created" % ", ".join(_KEPT)))
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, default=lambda v: v.isoformat()) + "\n")
    return len(rows)


def import_targets(path):
    """Insert the exported targets that are not in the table, as they were
    (who added them, when, retired or not), then measure each on the
    archived images; returns their names."""
    from gavo import base
    restored = []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with base.getWritableAdminConn() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": LOCK_KEY})
        for row in rows:
            if _existing(conn, row["name"]) is None:
                conn.execute("INSERT INTO rapas.targets (%s, target_did, backfill) VALUES (%s, %%(did)s, 'pending')"
                             % (", ".join(_KEPT), ", ".join(f"%({k})s" for k in _KEPT)),
                             dict(row, did=target_did(row["name"])))
                restored.append(row["name"])
    for name in restored:
        backfill(name)
    return restored


def main(argv=None):
    """python3 lightcurve.py --add NAME RA DEC [KIND] | --export FILE | --import FILE | --backfill NAME ...
    | --resume (the backfills that died)"""
    import sys
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) in (4, 5) and argv[0] == "--add":
        try:
            add_target(argv[1], float(argv[2]), float(argv[3]), kind=argv[4] if len(argv) == 5 else None,
                       user="the archive's administrator")
        except TargetError as exc:
            print(f"lightcurve: {exc}", file=sys.stderr)
            return 1
        print(f"{argv[1]}: {backfill(argv[1])} light-curve rows from the archived images")
    elif len(argv) == 2 and argv[0] == "--export":
        print(f"{export_targets(argv[1])} targets written to {argv[1]}")
    elif len(argv) == 2 and argv[0] == "--import":
        print(f"targets restored and measured: {', '.join(import_targets(argv[1])) or 'none'}")
    elif len(argv) >= 2 and argv[0] == "--backfill":
        for name in argv[1:]:
            print(f"{name}: {backfill(name)} light-curve rows added")
    elif argv == ["--resume"]:
        print(f"backfills run again: {', '.join(resume_stalled_backfills()) or 'none'}")
    else:
        print(main.__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

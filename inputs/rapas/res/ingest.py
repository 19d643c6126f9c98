"""Ingest one reduced frame into the RAPAS archive: all rows or none.

Runs on DaCHS's Python (Debian's /usr/bin/python3), never in the pipeline's
virtual environment:

    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py PRODUCT_DIR [PRODUCT_DIR ...]
    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py --remove OBS_ID [OBS_ID ...]

The product directory is what ``rapas-reduce`` wrote (calibrated.fits,
sources.fits, summary.json, plots, log).  It is copied to
``<resdir>/data/<obs_id>/``; then, in one database transaction, the rows of
an earlier ingestion of the same submitted file (same SHA-256) are deleted
and the image, its product entry, its sources and the notable objects in
its field are inserted, and every alert target in its footprint is
measured on it (forced photometry, ``lightcurve.measure_image``).  If
anything fails, the transaction is rolled back and the earlier files are
put back, so the archive is exactly as before.

``--remove`` withdraws images: their rows go in one transaction, then their
product directory.
"""
import json
import os
import shutil
import sys
from pathlib import Path

from gavo import api

#: the pipeline-archive contract (processing/contract.py, linked beside this file)
contract, _ = api.loadPythonModule("contract", relativeTo=__file__)
#: lost connections and waiting for the database
database, _ = api.loadPythonModule("database", relativeTo=__file__)
#: alert targets: forced photometry on the new image
lightcurve, _ = api.loadPythonModule("lightcurve", relativeTo=__file__)

REQUIRED = ("calibrated.fits", "sources.fits", contract.SUMMARY_NAME)
RD_ID = "rapas/q"


class IngestError(Exception):
    """The product directory cannot be ingested; the archive is unchanged."""


class ArchiveUnavailable(IngestError):
    """The database connection went away while the frame was being stored."""

    def __init__(self):
        super().__init__("the archive database restarted while the frame was being stored; nothing was"
                         " stored — submit it again")


def _read_summary(product_dir):
    """The product's ``contract.Summary``."""
    missing = [name for name in REQUIRED if not (product_dir / name).is_file()]
    if missing:
        raise IngestError(f"{product_dir} is not a complete RAPAS product: missing {', '.join(missing)}")
    try:
        return contract.Summary.from_dict(json.loads((product_dir / contract.SUMMARY_NAME).read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise IngestError(f"{product_dir}/{contract.SUMMARY_NAME} is unreadable ({exc})") from exc


def _place_files(product_dir, target, products):
    """Copy the products (the summary's list: a job directory holds more,
    the upload...) next to ``target``; return the backup of an older copy."""
    staging = target.with_name("." + target.name + ".new")
    backup = target.with_name("." + target.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(backup, ignore_errors=True)
    staging.mkdir(mode=0o755)
    for name in (p["name"] for p in products):
        if (product_dir / name).is_file():
            shutil.copyfile(product_dir / name, staging / name)
    if target.exists():
        target.rename(backup)
    staging.rename(target)
    return backup


def _restore_files(target, backup):
    shutil.rmtree(target, ignore_errors=True)
    if backup.exists():
        backup.rename(target)


def _product_place(obs_id):
    """The image's product directory in the archive and its calibrated FITS's accref."""
    from gavo import base
    target = Path(api.getRD(RD_ID).resdir) / "data" / obs_id
    return target, os.path.relpath(target / "calibrated.fits", base.getConfig("inputsDir"))


def _delete_rows(conn, obs_id, accref):
    conn.execute("DELETE FROM rapas.lightcurves WHERE obs_id=%(obs_id)s", {"obs_id": obs_id})
    conn.execute("DELETE FROM rapas.notable WHERE obs_id=%(obs_id)s", {"obs_id": obs_id})
    conn.execute("DELETE FROM rapas.sources WHERE obs_id=%(obs_id)s", {"obs_id": obs_id})
    conn.execute("DELETE FROM rapas.images WHERE obs_id=%(obs_id)s", {"obs_id": obs_id})
    conn.execute("DELETE FROM dc.products WHERE accref=%(accref)s", {"accref": accref})


def ingest(product_dir):
    """Ingest one product directory; returns dict(obs_id, obs_publisher_did, n_sources,
    calib_level, calibration_error)."""
    from gavo import base
    product_dir = Path(product_dir).resolve()
    summary = _read_summary(product_dir)
    obs_id = summary.obs_id
    rd = api.getRD(RD_ID)
    target, accref = _product_place(obs_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    backup = _place_files(product_dir, target, summary.products)
    options = api.getParseOptions(validateRows=True)
    try:
        with base.getWritableAdminConn() as conn:
            _delete_rows(conn, obs_id, accref)
            api.makeData(rd.getById("import_images"), forceSource=str(target / "calibrated.fits"),
                         connection=conn, parseOptions=options, runCommit=False)
            api.makeData(rd.getById("import_sources"), forceSource=str(target / "sources.fits"),
                         connection=conn, parseOptions=options, runCommit=False)
            api.makeData(rd.getById("import_notable"), forceSource=str(target / contract.SUMMARY_NAME),
                         connection=conn, parseOptions=options, runCommit=False)
            lightcurve.measure_image(conn, summary, target)
            n_rows = list(conn.query("SELECT count(*) FROM rapas.sources WHERE obs_id=%(o)s",
                                     {"o": obs_id}))[0][0]
            if n_rows != summary.n_sources:
                raise IngestError(f"{obs_id}: {n_rows} source rows read, summary says {summary.n_sources}")
            pub_did = list(conn.query("SELECT publisher_did FROM rapas.images WHERE obs_id=%(o)s",
                                      {"o": obs_id}))[0][0]
    except Exception as exc:
        pub_did = _stored_pub_did(summary) if database.is_disconnect(exc) else None
        if pub_did is None:
            _restore_files(target, backup)
            if database.is_disconnect(exc):
                raise ArchiveUnavailable() from exc
            if isinstance(exc, IngestError):
                raise
            raise IngestError(f"ingestion of {product_dir.name} failed and was rolled back:"
                              f" {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc
    shutil.rmtree(backup, ignore_errors=True)
    return {"obs_id": obs_id, "obs_publisher_did": pub_did, "n_sources": summary.n_sources,
            "calib_level": summary.calib_level, "calibration_error": summary.calibration_error,
            "new_targets": _follow_alerts(summary)}


def _follow_alerts(summary):
    """Alerts in the new image's field become targets (after the commit:
    the image is archived whatever happens here), and backfills that died
    are run again; the new targets' names."""
    from gavo import base
    try:
        lightcurve.resume_stalled_backfills()
        return lightcurve.add_alert_targets(summary)
    except Exception as exc:
        base.ui.notifyWarning(f"{summary.obs_id}: alerts in the field not added as targets: {exc}")
        return []


def _stored_pub_did(summary):
    """After the connection died during ingestion: the publisher DID of this file's
    image row if the commit went through all the same, asked once the
    database answers again; None if it did not, or if the database does not
    answer within its wait."""
    from gavo import base

    def look():
        with base.getTableConn() as conn:
            rows = list(conn.query("SELECT publisher_did FROM rapas.images WHERE obs_id=%(o)s AND checksum=%(c)s",
                                   {"o": summary.obs_id, "c": summary.checksum_sha256}))
        return rows[0][0] if rows else None
    try:
        return database.retrying(look)
    except Exception as exc:
        if database.is_disconnect(exc):
            return None
        raise


def remove(obs_id):
    """Withdraw an image: its rows (one transaction), then its product files."""
    from gavo import base
    target, accref = _product_place(obs_id)
    with base.getWritableAdminConn() as conn:
        if not list(conn.query("SELECT 1 FROM rapas.images WHERE obs_id=%(o)s", {"o": obs_id})):
            raise IngestError(f"{obs_id} is not in the archive")
        _delete_rows(conn, obs_id, accref)
    shutil.rmtree(target, ignore_errors=True)
    return {"obs_id": obs_id, "removed": True}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    action = ingest
    if argv[:1] == ["--remove"]:
        action, argv = remove, argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    status = 0
    for item in argv:
        try:
            print(json.dumps(action(item)))
        except IngestError as exc:
            print(f"rapas-ingest: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

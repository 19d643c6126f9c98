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

Ingestions of one file (one obs_id) take turns (a PostgreSQL advisory
lock, taken before any file moves): the same file submitted twice at once
is archived once, by the second replacing the first.  The image row records
the member who submitted it (``submitted_by``, also kept in the product
directory as ``submitter.txt``); another member's submission of the same
file is refused with one line naming the image, and only the command line
(an administrator) replaces anyone's.

``--remove`` withdraws images (an administrator: any image; the
``rapas/q/withdraw`` service: a member's own): their rows go in one
transaction with an audit row in ``rapas.withdrawals`` (who, when, why, the
file's SHA-256), then their product directory.

    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py --remove OBS_ID [OBS_ID ...] [--reason TEXT]
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
#: the submitting member's name in the product directory (read by the RD's import)
SUBMITTER_NAME = "submitter.txt"
#: first key of the per-obs_id advisory locks (the second is the obs_id's hash)
LOCK_CLASS = 7242


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


def _place_files(product_dir, target, products, member):
    """Copy the products (the summary's list: a job directory holds more,
    the upload...) and the submitter's name next to ``target``; return the
    backup of an older copy."""
    staging = target.with_name("." + target.name + ".new")
    backup = target.with_name("." + target.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(backup, ignore_errors=True)
    staging.mkdir(mode=0o755)
    for name in (p["name"] for p in products):
        if (product_dir / name).is_file():
            shutil.copyfile(product_dir / name, staging / name)
    if member:
        (staging / SUBMITTER_NAME).write_text(member + "\n")
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


def _lock_image(conn, obs_id):
    """Wait for any other ingestion or withdrawal of this obs_id (until the
    transaction ends)."""
    conn.execute("SELECT pg_advisory_xact_lock(%(c)s, hashtext(%(o)s))", {"c": LOCK_CLASS, "o": obs_id})


def _claim(conn, obs_id, member):
    """Wait for any other ingestion of this obs_id, then refuse replacing
    another member's image (``member`` None: the command line, which may)."""
    _lock_image(conn, obs_id)
    owners = [row[0] for row in conn.query("SELECT submitted_by FROM rapas.images WHERE obs_id=%(o)s",
                                           {"o": obs_id})]
    if member and owners and owners[0] and owners[0] != member:
        raise IngestError(f"this file is in the archive already as {obs_id}, submitted by another member;"
                          " only they (or an administrator) can replace it")


def ingest(product_dir, member=None):
    """Ingest one product directory, submitted by ``member`` (a job's
    owner; None from the command line); returns dict(obs_id,
    obs_publisher_did, n_sources, calib_level, calibration_error, new_targets)."""
    from gavo import base
    product_dir = Path(product_dir).resolve()
    summary = _read_summary(product_dir)
    obs_id = summary.obs_id
    rd = api.getRD(RD_ID)
    target, accref = _product_place(obs_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    options = api.getParseOptions(validateRows=True)
    backup = None
    try:
        with base.getWritableAdminConn() as conn:
            _claim(conn, obs_id, member)
            backup = _place_files(product_dir, target, summary.products, member)
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
            if backup is not None:
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


#: who withdraws from the command line
ADMINISTRATOR = "administrator"


def remove(obs_id, member=None, reason=None):
    """Withdraw an image: its rows and an audit row (one transaction), then
    its product files.  ``member`` (None: an administrator) may withdraw
    only an image they submitted."""
    from gavo import base
    target, accref = _product_place(obs_id)
    with base.getWritableAdminConn() as conn:
        _lock_image(conn, obs_id)
        rows = list(conn.query("SELECT submitted_by, checksum FROM rapas.images WHERE obs_id=%(o)s", {"o": obs_id}))
        if not rows:
            raise IngestError(f"{obs_id} is not in the archive")
        submitter, checksum = rows[0]
        if member is not None and submitter != member:
            raise IngestError(f"{obs_id} was not submitted by you: only its submitter or an administrator"
                              " can withdraw it")
        _delete_rows(conn, obs_id, accref)
        conn.execute("INSERT INTO rapas.withdrawals (obs_id, withdrawn_at, withdrawn_by, submitted_by, reason,"
                     " checksum) VALUES (%(o)s, NOW() AT TIME ZONE 'UTC', %(by)s, %(sub)s, %(why)s, %(c)s)",
                     {"o": obs_id, "by": member or ADMINISTRATOR, "sub": submitter, "why": reason, "c": checksum})
    shutil.rmtree(target, ignore_errors=True)
    return {"obs_id": obs_id, "removed": True, "withdrawn_by": member or ADMINISTRATOR}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    action = ingest
    if argv[:1] == ["--remove"]:
        argv = argv[1:]
        reason = None
        if "--reason" in argv[:-1]:
            at = argv.index("--reason")
            reason, argv = argv[at + 1], argv[:at] + argv[at + 2:]

        def action(obs_id):
            return remove(obs_id, reason=reason)
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

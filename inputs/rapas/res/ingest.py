"""Ingest one reduced frame into the RAPAS archive: all rows or none.

Runs on DaCHS's Python (Debian's /usr/bin/python3), never in the pipeline's
virtual environment:

    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py PRODUCT_DIR [PRODUCT_DIR ...]
    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py --remove OBS_ID [OBS_ID ...]

The product directory is what ``rapas-reduce`` wrote (calibrated.fits,
sources.fits, summary.json, plots, log).  In one database transaction the
rows of an earlier ingestion of the same submitted file (same SHA-256) are
deleted and the image, its product entry, its sources and the notable
objects in its field are inserted, and every alert target in its footprint
is measured on it (forced photometry, ``lightcurve.measure_image``).  The
rows are read from a copy of the products in a staging directory beside the
archive's ``data/`` (named by the transaction's id, not served); once the
transaction has committed the copy replaces ``data/<obs_id>/``, and after a
rollback it is dropped: the archive is exactly as before.  A process killed
in between leaves its staging directory; ``sweep`` (``--sweep``; the server
runs it at start and every 15 s) settles it by the transaction's outcome.

Ingestions and withdrawals of one file (one obs_id) take turns (a
PostgreSQL advisory lock, held until its files have settled): the same
file submitted twice at once is archived once, by the second replacing the
first.  The image row records
the member who submitted it (``submitted_by``, also kept in the product
directory as ``submitter.txt``); another member's submission of the same
file is refused with one line naming the image, and only the command line
(an administrator) replaces anyone's.

``--remove`` withdraws images (an administrator: any image; the
``rapas/q/withdraw`` service: a member's own): their rows go in one
transaction with an audit row in ``rapas.withdrawals`` (who, when, why, the
file's SHA-256); their product directory leaves the archive with the commit.

    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py --remove OBS_ID [OBS_ID ...] [--reason TEXT]
    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py --sweep
"""
import errno
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
#: files of ingestions and withdrawals not yet committed, beside data/ (see ``_staging``)
STAGING = "staging"


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


def _stage_files(product_dir, staged, products, member):
    """Copy the products (the summary's list: a job directory holds more,
    the upload...) and the submitter's name into ``staged``, a directory
    named by the obs_id in the transaction's staging directory."""
    staged.mkdir(mode=0o755, parents=True)
    for name in (p["name"] for p in products):
        if (product_dir / name).is_file():
            shutil.copyfile(product_dir / name, staged / name)
    if member:
        (staged / SUBMITTER_NAME).write_text(member + "\n")
    _owned_like_the_archive(staged)


def _owned_like_the_archive(staged):
    """Give files staged by root (an administrator's command) to the owner
    of the staging directory, the user the server runs as: its jobs must be
    able to replace and withdraw them later."""
    if os.geteuid() != 0:
        return
    owner = staged.parent.parent.stat()
    for path in (staged.parent, staged, *staged.iterdir()):
        os.chown(path, owner.st_uid, owner.st_gid)


def _archive_place(obs_id):
    """The image's product directory in the archive (served) and its
    calibrated FITS's accref."""
    from gavo import base
    target = Path(api.getRD(RD_ID).resdir) / "data" / obs_id
    return target, os.path.relpath(target / "calibrated.fits", base.getConfig("inputsDir"))


def _staging(xid, obs_id):
    """Where a transaction (``xid``, PostgreSQL's ``txid_current()``) keeps
    an image's files until it has committed: ``<resdir>/staging/XID/OBS_ID``
    (the new products), ``OBS_ID.old`` (those it replaces),
    ``OBS_ID.withdrawn`` (those of a withdrawn image).  Beside ``data/``,
    on its file system (moves are renames), and not served."""
    return Path(api.getRD(RD_ID).resdir) / STAGING / str(xid) / obs_id


def _settle(staged, committed):
    """Make an image's files follow its transaction's outcome: after a
    commit the staged products replace the archive's (a withdrawal's files
    go); after a rollback the staged products go (a withdrawal's files come
    back).  Safe to repeat from any point: the sweep finishes what a killed
    process began."""
    target, _ = _archive_place(staged.name)
    old = staged.with_name(staged.name + ".old")
    withdrawn = staged.with_name(staged.name + ".withdrawn")
    if committed:
        if staged.is_dir():
            if target.exists():
                target.rename(old)
            staged.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(withdrawn, ignore_errors=True)
    else:
        shutil.rmtree(staged, ignore_errors=True)
        if withdrawn.is_dir() and not target.exists():
            withdrawn.rename(target)
    try:
        staged.parent.rmdir()
    except OSError:
        pass                     # another image of the transaction, or gone already


class _ImageLock:
    """An obs_id's PostgreSQL advisory lock, held from before any file is
    staged until its files have settled (past the commit), on a connection
    of its own: ingestions and withdrawals of one image take turns, and a
    killed process's lock goes with its connection."""

    def __init__(self, obs_id, wait=True):
        self.obs_id, self.wait, self.conn = obs_id, wait, None

    def __enter__(self):
        from gavo import base
        self.conn = base.getDBConnection("admin", autocommitted=True)
        function = "pg_advisory_lock" if self.wait else "pg_try_advisory_lock"
        cursor = self.conn.cursor()
        cursor.execute(f"SELECT {function}(%(c)s, hashtext(%(o)s))", {"c": LOCK_CLASS, "o": self.obs_id})
        held = cursor.fetchone()[0] is not False
        if not held:
            self.conn.close()
        return held

    def __exit__(self, *exc):
        self.conn.close()              # the lock goes with the session


def _transaction_id(conn):
    return list(conn.query("SELECT txid_current()"))[0][0]


def _delete_rows(conn, obs_id, accref):
    conn.execute("DELETE FROM rapas.lightcurves WHERE obs_id=%(obs_id)s", {"obs_id": obs_id})
    conn.execute("DELETE FROM rapas.notable WHERE obs_id=%(obs_id)s", {"obs_id": obs_id})
    conn.execute("DELETE FROM rapas.sources WHERE obs_id=%(obs_id)s", {"obs_id": obs_id})
    conn.execute("DELETE FROM rapas.images WHERE obs_id=%(obs_id)s", {"obs_id": obs_id})
    conn.execute("DELETE FROM dc.products WHERE accref=%(accref)s", {"accref": accref})


def _refuse_other_members_image(conn, obs_id, member):
    """Refuse replacing another member's image (``member`` None: the
    command line, which may)."""
    owners = [row[0] for row in conn.query("SELECT submitted_by FROM rapas.images WHERE obs_id=%(o)s",
                                           {"o": obs_id})]
    if member and owners and owners[0] and owners[0] != member:
        raise IngestError(f"this file is in the archive already as {obs_id}, submitted by another member;"
                          " only they (or an administrator) can replace it")


def ingest(product_dir, member=None):
    """Ingest one product directory, submitted by ``member`` (a job's
    owner; None from the command line); returns dict(obs_id,
    obs_publisher_did, n_sources, calib_level, calibration_error, new_targets)."""
    product_dir = Path(product_dir).resolve()
    summary = _read_summary(product_dir)
    try:
        with _ImageLock(summary.obs_id):
            pub_did = _store(product_dir, summary, member)
    except IngestError:
        raise
    except Exception as exc:               # the lock's own connection
        if database.is_disconnect(exc):
            raise ArchiveUnavailable() from exc
        raise
    return {"obs_id": summary.obs_id, "obs_publisher_did": pub_did, "n_sources": summary.n_sources,
            "calib_level": summary.calib_level, "calibration_error": summary.calibration_error,
            "new_targets": _follow_alerts(summary)}


def _store(product_dir, summary, member):
    """The rows (one transaction; the products read from the staging
    directory), then the files into the archive; the image's publisher DID."""
    from gavo import base
    obs_id = summary.obs_id
    rd = api.getRD(RD_ID)
    _, accref = _archive_place(obs_id)
    options = api.getParseOptions(validateRows=True)
    staged = None
    try:
        with base.getWritableAdminConn() as conn:
            _refuse_other_members_image(conn, obs_id, member)
            xid = _transaction_id(conn)
            staged = _staging(xid, obs_id)
            _stage_files(product_dir, staged, summary.products, member)
            _delete_rows(conn, obs_id, accref)
            for data_id, name in (("import_images", "calibrated.fits"), ("import_sources", "sources.fits"),
                                  ("import_notable", contract.SUMMARY_NAME)):
                api.makeData(rd.getById(data_id), forceSource=str(staged / name),
                             connection=conn, parseOptions=options, runCommit=False)
            lightcurve.measure_image(conn, summary, staged)
            n_rows = list(conn.query("SELECT count(*) FROM rapas.sources WHERE obs_id=%(o)s",
                                     {"o": obs_id}))[0][0]
            if n_rows != summary.n_sources:
                raise IngestError(f"{obs_id}: {n_rows} source rows read, summary says {summary.n_sources}")
            pub_did = list(conn.query("SELECT publisher_did FROM rapas.images WHERE obs_id=%(o)s",
                                      {"o": obs_id}))[0][0]
    except Exception as exc:
        if not (staged is not None and database.is_disconnect(exc) and _outcome(xid)):
            if staged is not None:
                _settle(staged, committed=False)
            if database.is_disconnect(exc):
                raise ArchiveUnavailable() from exc
            if isinstance(exc, IngestError):
                raise
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise IngestError("the archive is out of disk space; nothing was stored") from exc
            raise IngestError(f"ingestion of {product_dir.name} failed and was rolled back:"
                              f" {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc
        pub_did = database.retrying(lambda: _publisher_did(obs_id))    # the commit went through
    try:
        _settle(staged, committed=True)
    except OSError as exc:                 # the sweep tries again
        base.ui.notifyError(f"{obs_id}: committed files not moved into the archive: {exc}")
        raise IngestError(f"the frame's rows were stored but its files could not be put in place"
                          f" ({exc.strerror or exc}); the archive moves them once its administrator has"
                          " fixed the product directory's permissions") from exc
    return pub_did


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


def _outcome(xid):
    """After the connection died during ingestion: whether transaction
    ``xid`` committed all the same, asked once the database answers again
    (False if it does not answer within its wait)."""
    from gavo import base

    def look():
        with base.getTableConn() as conn:
            return list(conn.query("SELECT txid_status(%(x)s)", {"x": xid}))[0][0] == "committed"
    try:
        return database.retrying(look)
    except Exception as exc:
        if database.is_disconnect(exc):
            return False
        raise


def _publisher_did(obs_id):
    from gavo import base
    with base.getTableConn() as conn:
        return list(conn.query("SELECT publisher_did FROM rapas.images WHERE obs_id=%(o)s", {"o": obs_id}))[0][0]


#: who withdraws from the command line
ADMINISTRATOR = "administrator"


def remove(obs_id, member=None, reason=None):
    """Withdraw an image: its rows and an audit row (one transaction), its
    product files out of the archive once that has committed.  ``member``
    (None: an administrator) may withdraw only an image they submitted."""
    from gavo import base
    target, accref = _archive_place(obs_id)
    with _ImageLock(obs_id):
        staged = None
        try:
            with base.getWritableAdminConn() as conn:
                submitter, checksum = _withdrawable(conn, obs_id, member)
                staged = _staging(_transaction_id(conn), obs_id)
                staged.parent.mkdir(parents=True, exist_ok=True)
                _delete_rows(conn, obs_id, accref)
                conn.execute("INSERT INTO rapas.withdrawals (obs_id, withdrawn_at, withdrawn_by, submitted_by,"
                             " reason, checksum) VALUES (%(o)s, NOW() AT TIME ZONE 'UTC', %(by)s, %(sub)s, %(why)s,"
                             " %(c)s)", {"o": obs_id, "by": member or ADMINISTRATOR, "sub": submitter, "why": reason,
                                         "c": checksum})
                if target.exists():
                    target.rename(staged.with_name(obs_id + ".withdrawn"))
        except Exception as exc:
            if staged is not None and not database.is_disconnect(exc):     # a lost commit: the sweep decides
                _settle(staged, committed=False)
            raise
        _settle(staged, committed=True)
    return {"obs_id": obs_id, "removed": True, "withdrawn_by": member or ADMINISTRATOR}


def _withdrawable(conn, obs_id, member):
    """(submitter, checksum) of an image ``member`` (None: an
    administrator) may withdraw; IngestError if it may not."""
    rows = list(conn.query("SELECT submitted_by, checksum FROM rapas.images WHERE obs_id=%(o)s", {"o": obs_id}))
    if not rows:
        raise IngestError(f"{obs_id} is not in the archive")
    if member is not None and rows[0][0] != member:
        raise IngestError(f"{obs_id} was not submitted by you: only its submitter or an administrator"
                          " can withdraw it")
    return rows[0]


def sweep():
    """Finish what killed ingestions and withdrawals left in the staging
    directory, by their transactions' outcome (PostgreSQL's
    ``txid_status``): committed files go into the archive (or out of it),
    rolled-back ones are dropped (or put back).  Images being ingested now
    (their lock held) are left alone.  Returns what was settled, as
    (obs_id, committed) pairs."""
    from gavo import base
    root = Path(api.getRD(RD_ID).resdir) / STAGING
    settled = []
    for transaction in sorted(root.glob("[0-9]*")) if root.is_dir() else []:
        for obs_id in sorted({entry.name.split(".")[0] for entry in transaction.iterdir()}):
            with _ImageLock(obs_id, wait=False) as held:
                if not held:
                    continue
                with base.getTableConn() as conn:
                    status = list(conn.query("SELECT txid_status(%(x)s)", {"x": int(transaction.name)}))[0][0]
                if status == "in progress":
                    continue
                committed = status == "committed"
                if status is None:          # too old for PostgreSQL to say: the rows tell
                    committed = _in_archive(obs_id) != (transaction / f"{obs_id}.withdrawn").exists()
                _settle(transaction / obs_id, committed)
                settled.append((obs_id, committed))
    return settled


def _in_archive(obs_id):
    from gavo import base
    with base.getTableConn() as conn:
        return bool(list(conn.query("SELECT 1 FROM rapas.images WHERE obs_id=%(o)s", {"o": obs_id})))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    action = ingest
    if argv == ["--sweep"]:
        for obs_id, committed in sweep():
            print(json.dumps({"obs_id": obs_id, "settled": "committed" if committed else "rolled back"}))
        return 0
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

"""Ingest one reduced frame into the RAPAS archive: all rows or none.

Runs on DaCHS's Python (Debian's /usr/bin/python3), never in the pipeline's
virtual environment:

    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py [--link] PRODUCT_DIR [PRODUCT_DIR ...]
    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py --remove OBS_ID [OBS_ID ...]

The product directory is what ``rapas-reduce`` wrote (calibrated.fits,
sources.fits, summary.json, plots, log).  In one database transaction the
rows of an earlier ingestion of the same submitted file (same SHA-256) are
deleted and the image, its product entry, its sources and the notable
objects in its field are inserted, and every alert target in its footprint
is measured on it (forced photometry, ``lightcurve.measure_image``).  The
rows are read from a copy (or hard links, see ``--link``) of the products
in a staging directory beside the archive's ``data/`` (named by the
transaction's id, not served); once the transaction has committed the copy
replaces ``data/<obs_id>/``, and after a rollback it is dropped: the
archive is exactly as before.  A process killed
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

Many images are best ingested by one command (one process: DaCHS starts
once), ``--jobs`` (2) of them at once, each still in its own transaction.
The products are copied into the archive, or with ``--link`` hard-linked
(on the archive's file system; a directory handed over, as a bulk
re-reduction's output is: nothing may write into its files afterwards, and
the project's tools never rewrite a file in place; run by root, the files
then belong to the archive's user).  A frame's 20 MB are then not written
again: ``make bench-archive`` ingests 14-18 images/s instead of 11-12.  A
job's working directory is handed over in the same way.  The archive's
own product directories are ingested again (linked), each with the member
who submitted it, by

    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py --catch-up   # those not in the tables
    GAVOSETTINGS=... python3 inputs/rapas/res/ingest.py --all        # every one (a new contract)
"""
import argparse
import errno
import functools
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
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


def _stage_files(product_dir, staged, products, member, link):
    """Put the products (the summary's list: a job directory holds more,
    the upload...) and the submitter's name into ``staged``, a directory
    named by the obs_id in the transaction's staging directory: copies, or
    with ``link`` hard links (``_stage_file``)."""
    staged.mkdir(mode=0o755, parents=True)
    for name in (p["name"] for p in products):
        if (product_dir / name).is_file():
            _stage_file(product_dir / name, staged / name, link)
    if member:
        (staged / SUBMITTER_NAME).write_text(member + "\n")
    _owned_like_the_archive(staged)


def _stage_file(source, target, link):
    """Copy ``source`` to ``target``, or with ``link`` hard-link it: the
    product directory is handed over (a job's working directory, the
    archive's own data/, ``--link``), nothing writes into its files again,
    and its 20 MB are not copied.  A link the file system refuses (another
    file system, the kernel's protected_hardlinks) is a copy."""
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


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


def ingest(product_dir, member=None, link=False):
    """Ingest one product directory, submitted by ``member`` (a job's
    owner; None from the command line), its files copied or, with ``link``,
    hard-linked into the archive (see ``_stage_file``); returns
    dict(obs_id, obs_publisher_did, n_sources, calib_level,
    calibration_error, new_targets)."""
    product_dir = Path(product_dir).resolve()
    summary = _read_summary(product_dir)
    try:
        with _ImageLock(summary.obs_id):
            pub_did = _store(product_dir, summary, member, link)
    except IngestError:
        raise
    except Exception as exc:               # the lock's own connection
        if database.is_disconnect(exc):
            raise ArchiveUnavailable() from exc
        raise
    return {"obs_id": summary.obs_id, "obs_publisher_did": pub_did, "n_sources": summary.n_sources,
            "calib_level": summary.calib_level, "calibration_error": summary.calibration_error,
            "new_targets": _follow_alerts(summary)}


def _store(product_dir, summary, member, link):
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
            _stage_files(product_dir, staged, summary.products, member, link)
            _delete_rows(conn, obs_id, accref)
            api.makeData(rd.getById("import_images"), forceSource=str(staged / "calibrated.fits"),
                         connection=conn, parseOptions=options, runCommit=False)
            n_rows = copy_sources(conn, obs_id, staged / "sources.fits")
            api.makeData(rd.getById("import_notable"), forceSource=str(staged / contract.SUMMARY_NAME),
                         connection=conn, parseOptions=options, runCommit=False)
            lightcurve.measure_image(conn, summary, staged)
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


#: PostgreSQL's binary COPY: the signature, flags and header extension
#: length before the rows, the end marker after them
COPY_HEADER, COPY_TRAILER = b"PGCOPY\n\xff\r\n\x00" + bytes(8), b"\xff\xff"
#: binary COPY's big-endian layout of the contract's numeric types
COPY_TYPES = {"smallint": ">i2", "integer": ">i4", "bigint": ">i8", "real": ">f4", "double precision": ">f8"}


def _source_fields(obs_id, path):
    """The fields of the rapas.sources rows of the catalogue ``path``
    (sources.fits), as {column: (values, null)}: numeric columns in binary
    COPY's big-endian types, text as UTF-8 bytes; ``null`` where a value
    is NaN, empty text, a nullable integer's null literal, or in a column
    the file does not have (added to the contract after it was written).
    Then source_id (obs_id and the six-digit running number) and obs_id."""
    import numpy as np
    from astropy.io import fits
    with fits.open(path, memmap=False) as hdus:
        data = hdus[1].data
        n_rows = 0 if data is None else len(data)
        present = set(data.columns.names) if data is not None else set()
        fields = {}
        for column in contract.SOURCE_COLUMNS:
            if column.name not in present:
                if column.required:
                    raise IngestError(f"{path.name} has no {column.name} column")
                fields[column.name] = (np.zeros(n_rows, "S1"), np.ones(n_rows, bool))
                continue
            values = _raw_column(data, column.name)
            if column.type == "text":
                values, null = _text_field(values)
            else:
                null = np.isnan(values) if values.dtype.kind == "f" else (
                    values == int(column.null) if column.null else np.zeros(n_rows, bool))
                values = values.astype(COPY_TYPES[column.type])
            fields[column.name] = (values, null)
    numbers = np.char.zfill(fields["source_num"][0].astype(int).astype(str), 6)
    fields["source_id"] = (np.char.encode(np.char.add(f"{obs_id}-", numbers), "utf-8"), np.zeros(n_rows, bool))
    fields["obs_id"] = (np.full(n_rows, obs_id.encode()), np.zeros(n_rows, bool))
    return fields, n_rows


def _raw_column(data, name):
    """A FITS table column as stored (text as bytes), without astropy's
    conversions where it has no scaling."""
    import numpy as np
    column = data.columns[name]
    if column.bzero in (None, 0) and column.bscale in (None, 1):
        return np.ascontiguousarray(data.base[name])
    return np.asarray(data[name])


def _text_field(values):
    """(UTF-8 bytes stripped of blanks, null mask) of a text column; a
    column of blanks (an enrichment that matched nothing) at once."""
    import numpy as np
    if values.dtype.kind == "U":
        values = np.char.encode(values, "utf-8")
    octets = values.view(np.uint8)
    if not ((octets != 0) & (octets != 32)).any():
        return np.zeros(len(values), "S1"), np.ones(len(values), bool)
    values = np.char.strip(values)
    return values, np.char.str_len(values) == 0


def _binary_copy(fields, n_rows):
    """PostgreSQL binary COPY data of the rows made of ``fields`` (the
    values of _source_fields): each row its field count, then each field
    its length (-1: NULL) and bytes.  Built for all rows at once: every
    field padded to its column's width in one byte matrix, and the bytes
    that belong to the data picked out by a mask, in row order."""
    import numpy as np
    blocks, masks = [np.full((n_rows, 1), len(fields), ">i2").view(np.uint8)], [np.ones((n_rows, 2), bool)]
    for values, null in fields.values():
        width = values.dtype.itemsize
        lengths = np.char.str_len(values) if values.dtype.kind == "S" else np.full(n_rows, width)
        data = np.ascontiguousarray(values).view(np.uint8).reshape(n_rows, width)
        blocks += [np.where(null, -1, lengths).astype(">i4").reshape(n_rows, 1).view(np.uint8), data]
        masks += [np.ones((n_rows, 4), bool), (np.arange(width) < lengths[:, None]) & ~null[:, None]]
    return COPY_HEADER + np.hstack(blocks)[np.hstack(masks)].tobytes() + COPY_TRAILER


def copy_sources(conn, obs_id, path):
    """Add the sources of ``path`` (sources.fits) to rapas.sources in the
    transaction of ``conn`` with one binary COPY; the number of rows.  The
    rows are built column by column (numpy), not per cell through a
    grammar, and no ANALYZE follows: PostgreSQL's autovacuum refreshes the
    statistics (see the RD)."""
    import io
    fields, n_rows = _source_fields(obs_id, path)
    cursor = conn.cursor()
    cursor.copy_expert(f"COPY rapas.sources ({', '.join(fields)}) FROM STDIN WITH (FORMAT binary)",
                       io.BytesIO(_binary_copy(fields, n_rows)))
    cursor.close()
    return n_rows


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


def archived_products(only_missing):
    """The product directories in the archive's ``data/``, in name order;
    with ``only_missing``, only those whose image is not in rapas.images."""
    from gavo import base
    data = Path(api.getRD(RD_ID).resdir) / "data"
    products = sorted(path for path in data.iterdir() if (path / contract.SUMMARY_NAME).is_file())
    if only_missing:
        with base.getTableConn() as conn:
            archived = {row[0] for row in conn.query("SELECT obs_id FROM rapas.images")}
        products = [path for path in products if path.name not in archived]
    return products


def _submitter(product_dir):
    """The member an archived product directory was submitted by (None: an
    administrator)."""
    path = product_dir / SUBMITTER_NAME
    return (path.read_text().strip() or None) if path.is_file() else None


def _reported(action, item):
    """(JSON line, None) of ``action(item)``, or (None, the error line)."""
    try:
        return json.dumps(action(item)), None
    except IngestError as exc:
        return None, f"rapas-ingest: {exc}"


def run_batch(action, items, jobs):
    """(JSON line, None) or (None, error line) of ``action`` on each item,
    in order, ``jobs`` items at once: threads, each image in its own
    transaction on its own connections; while one waits for the database
    (COPY, index updates, commit) another reads and converts its files."""
    with ThreadPoolExecutor(max(1, min(jobs, len(items)))) as pool:
        yield from pool.map(functools.partial(_reported, action), items)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ingest.py", usage=__doc__)
    parser.add_argument("items", nargs="*")
    mode = parser.add_mutually_exclusive_group()
    for option in ("--remove", "--sweep", "--catch-up", "--all"):
        mode.add_argument(option, action="store_true")
    parser.add_argument("--reason")
    parser.add_argument("--link", action="store_true", help="hand the product directories over: their files"
                        " are hard-linked into the archive, not copied (do not write into them afterwards)")
    parser.add_argument("--jobs", type=int, default=2, help="images ingested at once (threads; one"
                        " transaction each): the database works on one while the next is read")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.sweep:
        for obs_id, committed in sweep():
            print(json.dumps({"obs_id": obs_id, "settled": "committed" if committed else "rolled back"}))
        return 0
    items, action = args.items, functools.partial(ingest, link=args.link)
    if args.catch_up or args.all:
        items = [str(path) for path in archived_products(only_missing=args.catch_up)]

        def action(product_dir):          # the archive's own files: linked back in place
            return ingest(product_dir, member=_submitter(Path(product_dir)), link=True)
    elif not items:
        print(__doc__, file=sys.stderr)
        return 2
    elif args.remove:
        def action(obs_id):
            return remove(obs_id, reason=args.reason)
    status = 0
    for line, error in run_batch(action, items, args.jobs):
        print(line or error, file=sys.stderr if error else sys.stdout, flush=True)
        status = 1 if error else status
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Partition ``rapas.sources`` by sky region: archive maintenance past what
one table serves well (see the README, "The archive at scale").

Runs on DaCHS's Python (Debian's /usr/bin/python3), as the archive's
administrator, in a maintenance window:

    GAVOSETTINGS=... python3 inputs/rapas/res/partition.py [--partitions 64]

In one transaction (ingestions and queries wait on the table's lock; a
failure leaves the table as it was) ``rapas.sources`` becomes a table
partitioned by range of ``q3c_ang2ipix(ra, dec)``, the key its q3c index
already orders by: each partition is a region of the sky holding about as
many rows as the others (bounds at the key's quantiles over a sample of
the rows; equal key ranges in an empty archive).  The rows are copied in
key order, so every partition starts clustered by position; the table's
indexes (PostgreSQL builds each on every partition), constraints, grants
and storage settings are those of the table it replaces, under the same
names.  Queries and ingestion go on unchanged: DaCHS's ``q3c_join``
is a set of key ranges, so a cone reads only the partitions it overlaps.

``dachs drop rapas/q`` drops the partitions with the table; a later
``dachs imp rapas/q`` on an empty schema creates a plain table again.
"""
import argparse
import sys

from gavo import base

TABLE = "rapas.sources"
#: q3c's pixel numbers (``q3c_ang2ipix``) lie in [0, 6 * 4**30)
IPIX_END = 6 * 4 ** 30
#: rows sampled for the partition bounds
SAMPLE_ROWS = 1_000_000


def _one(conn, sql, args=None):
    return list(conn.query(sql, args or {}))[0][0]


def sky_bounds(conn, n_partitions):
    """``n_partitions - 1`` inner bounds on ``q3c_ang2ipix(ra, dec)``,
    increasing: the key's quantiles over (a sample of) the rows, or equal
    steps when there are too few rows to place them."""
    n_rows = _one(conn, f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} LIMIT {SAMPLE_ROWS}) AS s")
    if n_rows < 100 * n_partitions:
        return [IPIX_END * k // n_partitions for k in range(1, n_partitions)]
    total = max(_one(conn, f"SELECT reltuples::bigint FROM pg_class WHERE oid = '{TABLE}'::regclass"), n_rows)
    sample = "" if total <= SAMPLE_ROWS else f" TABLESAMPLE SYSTEM ({100 * SAMPLE_ROWS / total})"
    fractions = [k / n_partitions for k in range(1, n_partitions)]
    bounds = _one(conn, f"SELECT percentile_disc(%(f)s) WITHIN GROUP (ORDER BY q3c_ang2ipix(ra, dec))"
                        f" FROM {TABLE}{sample}", {"f": fractions})
    return sorted(set(bounds))


def _definitions(conn):
    """What the new table must have of the old one: index definitions,
    constraints (name, definition), grants (grantee, privilege) and storage
    options."""
    indexes = [row[0] for row in conn.query(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'rapas' AND tablename = 'sources'")]
    constraints = list(conn.query(f"SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                                  f" WHERE conrelid = '{TABLE}'::regclass"))
    grants = list(conn.query(f"SELECT CASE WHEN grantee = 0 THEN 'PUBLIC' ELSE grantee::regrole::text END,"
                             f" privilege_type FROM pg_class, aclexplode(relacl)"
                             f" WHERE oid = '{TABLE}'::regclass AND grantee <> relowner"))
    options = _one(conn, f"SELECT reloptions FROM pg_class WHERE oid = '{TABLE}'::regclass") or []
    return indexes, constraints, grants, options


def is_partitioned(conn):
    return _one(conn, f"SELECT relkind FROM pg_class WHERE oid = '{TABLE}'::regclass") == "p"


def partition(conn, n_partitions):
    """Make ``rapas.sources`` a table of ``n_partitions`` sky partitions in
    the transaction of ``conn`` (an admin connection); the partitions'
    names and row counts."""
    conn.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
    # the foreign key's checks of rows this transaction added (deferred by
    # DaCHS) now: a table with checks pending cannot be dropped
    conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    if is_partitioned(conn):
        raise ValueError(f"{TABLE} is partitioned already")
    bounds = sky_bounds(conn, n_partitions)
    indexes, constraints, grants, options = _definitions(conn)
    conn.execute(f"CREATE TABLE {TABLE}_partitioned (LIKE {TABLE} INCLUDING DEFAULTS)"
                 " PARTITION BY RANGE (q3c_ang2ipix(ra, dec))")
    storage = f" WITH ({', '.join(options)})" if options else ""
    edges = ["MINVALUE", *map(str, bounds), "MAXVALUE"]
    names = [f"{TABLE}_sky{k:03d}" for k in range(len(edges) - 1)]
    for name, lo, hi in zip(names, edges[:-1], edges[1:]):
        conn.execute(f"CREATE TABLE {name} PARTITION OF {TABLE}_partitioned FOR VALUES FROM ({lo}) TO ({hi})"
                     f"{storage}")
    conn.execute(f"INSERT INTO {TABLE}_partitioned SELECT * FROM {TABLE} ORDER BY q3c_ang2ipix(ra, dec)")
    conn.execute(f"DROP TABLE {TABLE}")
    conn.execute(f"ALTER TABLE {TABLE}_partitioned RENAME TO sources")
    for definition in indexes:
        conn.execute(definition)
    for name, definition in constraints:
        conn.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")
    for grantee, privilege in grants:
        conn.execute(f"GRANT {privilege} ON {TABLE} TO {grantee}")
    conn.execute(f"ANALYZE {TABLE}")
    return {name.split(".")[1]: _one(conn, f"SELECT count(*) FROM {name}") for name in names}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="partition.py", usage=__doc__)
    parser.add_argument("--partitions", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        with base.getWritableAdminConn() as conn:
            counts = partition(conn, args.partitions)
    except Exception as exc:                       # rolled back: the table is as it was
        print(f"partition.py: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(f"{TABLE}: {sum(counts.values())} rows in {len(counts)} sky partitions,"
          f" {min(counts.values())} to {max(counts.values())} rows each")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The database side of ``make bench-archive`` (tests/bench_archive.py):
runs on DaCHS's Python with GAVOSETTINGS pointing at a throwaway instance.

    python3 archive_bench_db.py fill TEMPLATE_OBS_ID N_SOURCES PER_IMAGE EPOCHS
    python3 archive_bench_db.py queries REPEAT N_FIELDS
    python3 archive_bench_db.py ingest JOBS link|copy PRODUCT_DIR [PRODUCT_DIR ...]
    python3 archive_bench_db.py cluster
    python3 archive_bench_db.py partition N_PARTITIONS
    python3 archive_bench_db.py plans TEMPLATE_OBS_ID N_SOURCES PER_IMAGE EPOCHS [N_PARTITIONS]   (rolled back)

Each prints one JSON document on stdout.

The synthetic archive is a network's: ``N_SOURCES / PER_IMAGE`` images of
``images / EPOCHS`` fields spread over the sky, each field observed
``EPOCHS`` times (so a star's light curve has EPOCHS points whatever the
archive's size), the images in time order as they are ingested.  Every
image re-measures the same PER_IMAGE stars of its field (positions
jittered by 0.1 arcsec); 70 % of them carry a Gaia DR3 source_id, one in
500 a VSX name.  Image rows are copies of a real ingested image (the
template) moved to their field and time; source rows are generated in the
database (INSERT ... SELECT), under the RD's own DDL and indexes.
"""
import json
import statistics
import sys
import time

from gavo import api, base
from gavo.protocols import adqlglue

#: field size (deg): a 0.25 deg square, as a 2k x 2k camera at 0.45 arcsec/px
FIELD_DEG = 0.25
#: MJD of the first synthetic image, and the spacing of images (d)
T0_MJD, T_STEP = 60000.0, 0.01


def _field_centre_sql(field):
    """SQL (ra, dec) of field number ``field`` (an SQL expression): a
    deterministic even spread over the sky (golden-ratio sequences),
    |dec| < 80 deg."""
    return (f"360 * mod(({field}) * 0.6180339887 + 0.13, 1)",
            f"DEGREES(ASIN(0.985 * (2 * mod(({field}) * 0.7548776662 + 0.31, 1) - 1)))")


def _star_offset_sql(k, axis):
    """A star's offset (deg) from its field's centre, star number ``k``
    (an SQL expression) on ``axis`` 0 or 1: an R2 quasi-random sequence."""
    alpha = (0.7548776662, 0.5698402910)[axis]
    return f"({FIELD_DEG} * (mod(({k}) * {alpha}, 1) - 0.5))"


def fill(template, n_sources, per_image, epochs):
    """Build the synthetic archive (committed); its size and the seconds
    each step took."""
    with base.getWritableAdminConn() as conn:
        return _fill(conn, template, n_sources, per_image, epochs)


def _fill(conn, template, n_sources, per_image, epochs):
    n_images = max(1, n_sources // per_image)
    n_fields = max(1, n_images // epochs)
    ra_f, dec_f = _field_centre_sql(f"mod(g - 1, {n_fields})")
    half = FIELD_DEG / 2
    timings = {}
    t0 = time.perf_counter()
    conn.execute(f"""
        CREATE TEMP TABLE bench_fields AS
        SELECT g, 'bench-' || lpad(g::text, 9, '0') AS obs_id, mod(g - 1, {n_fields}) AS field,
               {ra_f} AS ra, {dec_f} AS dec, {T0_MJD} + g * {T_STEP} AS t_min
        FROM generate_series(1, {n_images}) AS g""")
    conn.execute(f"""
        INSERT INTO rapas.images
        SELECT (jsonb_populate_record(NULL::rapas.images, to_jsonb(t) || jsonb_build_object(
          'obs_id', f.obs_id,
          'accref', 'rapas/data/' || f.obs_id || '/calibrated.fits',
          'publisher_did', 'ivo://rapas.bench/~?rapas/data/' || f.obs_id || '/calibrated.fits',
          'checksum', md5(f.obs_id),
          'centeralpha', f.ra, 'centerdelta', f.dec,
          't_min', f.t_min, 't_max', f.t_min + t.exptime / 86400, 'dateobs', f.t_min,
          'n_sources', {per_image},
          'coverage', format('{{(%%sd,%%sd),(%%sd,%%sd),(%%sd,%%sd),(%%sd,%%sd)}}',
             f.ra - {half} / cos(radians(f.dec)), f.dec - {half},
             f.ra + {half} / cos(radians(f.dec)), f.dec - {half},
             f.ra + {half} / cos(radians(f.dec)), f.dec + {half},
             f.ra - {half} / cos(radians(f.dec)), f.dec + {half})))).*
        FROM rapas.images AS t, bench_fields AS f WHERE t.obs_id = %(template)s""",
                 {"template": template})
    timings["images_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dx, dy = _star_offset_sql("k", 0), _star_offset_sql("k", 1)
    conn.execute(f"""
        INSERT INTO rapas.sources (source_num, source_id, obs_id, ra, dec, x_image, y_image,
          mag_cal, mag_cal_err, mag_calib_err, mag_psf, mag_psf_err, mag_inst, mag_inst_err, snr,
          fwhm, ellipticity, flags, gaia_source_id, gaia_sep, gaia_bp_rp, vsx_name, vsx_type)
        SELECT k, f.obs_id || '-' || lpad(k::text, 6, '0'), f.obs_id,
          f.ra + {dx} / cos(radians(f.dec)) + (random() - 0.5) * 5.6e-5,
          f.dec + {dy} + (random() - 0.5) * 5.6e-5,
          1024 + 8000 * {dx}, 1024 + 8000 * {dy},
          m, 0.01 + 0.001 * exp(m - 14), 0.01, m + 0.01, 0.01, m - 25, 0.01, 100, 3.2, 0.05,
          (mod(k, 17) = 0)::int,
          CASE WHEN mod(k, 10) < 7 THEN f.field::bigint * 10000000 + k END, 0.1, 0.9,
          CASE WHEN mod(k, 500) = 1 THEN 'BENCH V' || f.field || '-' || k END,
          CASE WHEN mod(k, 500) = 1 THEN 'EW' END
        FROM bench_fields AS f, generate_series(1, {per_image}) AS k,
          LATERAL (SELECT 12 + 9 * mod(k * 0.41421356, 1) + (random() - 0.5) * 0.02 AS m) AS mag""")
    timings["sources_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    conn.execute("ANALYZE rapas.images")
    conn.execute("ANALYZE rapas.sources")
    timings["analyze_s"] = time.perf_counter() - t0
    count, heap, indexes = list(conn.query("SELECT count(*), pg_table_size('rapas.sources'),"
                                           " pg_indexes_size('rapas.sources') FROM rapas.sources"))[0]
    return {"images": n_images, "fields": n_fields, "sources": count, "heap_bytes": heap,
            "index_bytes": indexes, **timings}


def cluster():
    """CLUSTER the sources by their position index (what the archive's
    maintenance does, see the README); the seconds it took."""
    t0 = time.perf_counter()
    with base.getWritableAdminConn() as conn:
        index = list(conn.query("SELECT indexname FROM pg_indexes WHERE schemaname='rapas'"
                                " AND tablename='sources' AND indexdef LIKE '%%q3c_ang2ipix%%'"))[0][0]
        conn.execute(f"CLUSTER rapas.sources USING {index}")
        conn.execute("ANALYZE rapas.sources")
    return {"cluster_s": time.perf_counter() - t0}


def _res_module(name):
    """The archive's res/<name>.py, as DaCHS loads it."""
    return api.loadPythonModule(name, relativeTo=f"{api.getRD('rapas/q').resdir}/res/{name}.py")[0]


def partition(n_partitions):
    """Partition the sources by sky region (res/partition.py, what the
    archive's maintenance does past 10^8 rows); the seconds it took and the
    partitions' row counts."""
    module = _res_module("partition")
    t0 = time.perf_counter()
    with base.getWritableAdminConn() as conn:
        counts = module.partition(conn, n_partitions)
    return {"partition_s": time.perf_counter() - t0, "rows": sorted(counts.values())}


def _star(conn, field, k):
    """(ra, dec, vsx_name, gaia_source_id) of star ``k`` of ``field`` in
    the field's first image (image number field + 1)."""
    return list(conn.query("SELECT ra, dec, vsx_name, gaia_source_id FROM rapas.sources"
                           " WHERE obs_id = %(o)s AND source_num = %(k)s",
                           {"o": f"bench-{field + 1:09d}", "k": k}))[0]


#: the queries the README and the TAP examples advertise; {ra}, {dec},
#: {gaia}, {vsx}, {t0} filled per repetition
QUERIES = {
    "cone 1'": """SELECT s.source_id, s.ra, s.dec, s.mag_cal, s.mag_cal_err, i.filter, i.t_min
        FROM rapas.sources AS s JOIN rapas.images AS i ON s.obs_id = i.obs_id
        WHERE 1 = CONTAINS(POINT('ICRS', s.ra, s.dec), CIRCLE('ICRS', {ra}, {dec}, 0.016667))""",
    "cone 0.5 deg": """SELECT s.source_id, s.ra, s.dec, s.mag_cal
        FROM rapas.sources AS s
        WHERE 1 = CONTAINS(POINT('ICRS', s.ra, s.dec), CIRCLE('ICRS', {ra}, {dec}, 0.5))""",
    "light curve": """SELECT i.t_min, i.filter, i.observer, s.mag_cal, s.mag_cal_err, s.mag_calib_err,
          s.mag_psf, s.mag_psf_err, s.flags
        FROM rapas.sources AS s JOIN rapas.images AS i ON s.obs_id = i.obs_id
        WHERE 1 = CONTAINS(POINT('ICRS', s.ra, s.dec), CIRCLE('ICRS', {ra}, {dec}, 0.0004))
          AND s.flags = 0 ORDER BY t_min""",
    "Gaia id": """SELECT s.source_id, s.mag_cal, i.t_min FROM rapas.sources AS s
        JOIN rapas.images AS i ON s.obs_id = i.obs_id WHERE s.gaia_source_id = {gaia}""",
    "VSX name": """SELECT s.vsx_name, s.vsx_type, i.t_min, s.mag_cal, s.mag_cal_err, i.filter
        FROM rapas.sources AS s JOIN rapas.images AS i ON s.obs_id = i.obs_id
        WHERE s.vsx_name = '{vsx}' ORDER BY i.t_min""",
}

#: SIAP2 with TIME only, as DaCHS's //siap2 dbCore phrases it on ivoa.obscore
SIAP2_TIME = ("SELECT * FROM ivoa.obscore WHERE obs_collection='RAPAS'"
              " AND %(hi)s >= t_min AND t_max >= %(lo)s LIMIT 1000")


def _percentiles(seconds):
    ms = sorted(1000 * s for s in seconds)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2)}


def _plan(conn, sql):
    return "\n".join(row[0] for row in conn.query("EXPLAIN " + sql))


def _blocks(conn, sql):
    """Buffer pages (8 kB) the query touches, cached or not: what a cold
    archive reads from disk."""
    plan = list(conn.query("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql))[0][0]
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"]


def _translated(adql, star):
    """The SQL DaCHS's TAP runs for ``adql`` about ``star`` (ra, dec,
    vsx_name, gaia_source_id)."""
    ra, dec, vsx, gaia = star
    sql, _ = adqlglue.morphADQL(adql.format(ra=ra, dec=dec, vsx=vsx, gaia=gaia))
    return sql.replace("%%", "%")


def _grants(conn):
    return list(conn.query("SELECT relacl::text FROM pg_class WHERE oid = 'rapas.sources'::regclass"))[0][0]


def plans(template, n_sources, per_image, epochs, n_partitions=0):
    """The plans of the advertised queries on a synthetic archive built in
    a transaction that is then rolled back (the instance is as before; the
    server goes on serving its own rows meanwhile), with ``n_partitions``
    sky partitions of rapas.sources made in that transaction."""
    conn = base.getDBConnection("admin")
    try:
        size = _fill(conn, template, n_sources, per_image, epochs)
        star = _star(conn, 0, 1)
        result = {"jit": list(conn.query("SHOW jit"))[0][0], "fill": size}
        if n_partitions:
            module = _res_module("partition")
            grants = _grants(conn)
            result["partitions"] = sorted(module.partition(conn, n_partitions).values())
            result["grants_kept"] = _grants(conn) == grants
            result["rows"] = list(conn.query("SELECT count(*) FROM rapas.sources"))[0][0]
        result["plans"] = {name: _plan(conn, _translated(adql, star)) for name, adql in QUERIES.items()}
        result["plans"]["SIAP2 time"] = _plan(conn, SIAP2_TIME % {"lo": T0_MJD + 1, "hi": T0_MJD + 1.1})
        return result
    finally:
        conn.rollback()
        conn.close()


def queries(repeat, n_fields):
    """p50 and p95 of each advertised query over ``repeat`` positions (each
    run once to warm the cache first, as a busy archive's pages are), as
    TAP runs them: the ADQL translated by DaCHS, on the untrusted role."""
    results = {}
    with base.getTableConn() as admin:
        stars = [_star(admin, (17 * r) % n_fields, 1 + (r * 491) % 2000 // 500 * 500) for r in range(repeat)]
        t_end = list(admin.query("SELECT max(t_max) FROM rapas.images WHERE obs_id LIKE 'bench-%%'"))[0][0]
    with base.getUntrustedConn() as conn:
        jit = list(conn.query("SHOW jit"))[0][0]
        for name, adql in QUERIES.items():
            times, rows = [], []
            for star in stars:
                sql = _translated(adql, star)
                list(conn.query(sql))
                t0 = time.perf_counter()
                rows.append(len(list(conn.query(sql))))
                times.append(time.perf_counter() - t0)
            results[name] = {**_percentiles(times), "rows_median": statistics.median(rows), "sql": sql,
                             "plan": _plan(conn, sql), "blocks": _blocks(conn, sql)}
        times, rows = [], []
        for r in range(repeat):
            lo = T0_MJD + (t_end - T0_MJD) * (r + 0.5) / repeat
            pars = {"lo": lo, "hi": lo + 0.1}
            list(conn.query(SIAP2_TIME, pars))
            t0 = time.perf_counter()
            rows.append(len(list(conn.query(SIAP2_TIME, pars))))
            times.append(time.perf_counter() - t0)
        results["SIAP2 time"] = {**_percentiles(times), "rows_median": statistics.median(rows),
                                 "plan": _plan(conn, SIAP2_TIME % pars), "blocks": _blocks(conn, SIAP2_TIME % pars)}
    return {"jit": jit, "queries": results}


def ingest(dirs, jobs, link):
    """Ingest product directories in this one process as ``ingest.py
    --jobs`` (and ``--link``) does (res/ingest.py's ``run_batch``, one
    transaction each): seconds in all."""
    import functools
    module = _res_module("ingest")
    action = functools.partial(module.ingest, link=link)
    action(dirs[0])                                   # imports and first-use costs
    t0 = time.perf_counter()
    results = list(module.run_batch(action, dirs[1:], jobs))
    seconds = time.perf_counter() - t0
    errors = [error for _, error in results if error]
    if errors:
        raise SystemExit("\n".join(errors))
    return {"images": len(results), "jobs": jobs, "link": link, "seconds": seconds,
            "sources": sum(json.loads(line)["n_sources"] for line, _ in results)}


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "fill":
        result = fill(args[0], *map(int, args[1:4]))
    elif command == "queries":
        result = queries(int(args[0]), int(args[1]))
    elif command == "ingest":
        result = ingest(args[2:], int(args[0]), args[1] == "link")
    elif command == "plans":
        result = plans(args[0], *map(int, args[1:5]))
    elif command == "cluster":
        result = cluster()
    elif command == "partition":
        result = partition(int(args[0]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])

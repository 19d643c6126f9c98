"""The archive's scale machinery on the shared instance: the plans of the
advertised queries on a synthetic archive (built in a transaction that is
rolled back), and the bulk ingestion commands.  The timings at 10^7 rows
are ``make bench-archive``'s (tests/bench_archive.py), not a test's."""
import json
import re
import subprocess

import numpy as np
import pytest
import pyvo
from astropy.table import Table

from bench_archive import product_copies
from dachs_instance import DACHS_PYTHON, REPO

pytestmark = pytest.mark.archive

INGEST = str(REPO / "inputs" / "rapas" / "res" / "ingest.py")


def _plans(dachs, template, n_sources, per_image, epochs, partitions=0):
    run = subprocess.run([DACHS_PYTHON, str(REPO / "tests" / "archive_bench_db.py"), "plans", template,
                          str(n_sources), str(per_image), str(epochs), str(partitions)], env=dachs.env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def test_advertised_queries_use_their_indexes_and_nested_loops(dachs, archived):
    """500 images of 100 sources (25 fields, 20 epochs each) copied from
    the archived one: every query the README and the TAP examples
    advertise reaches rapas.sources through an index, and the light curve
    of one star joins its images by nested loop (pgSphere's fixed 0.1 %
    estimate hashed the whole images table)."""
    _, _, ingested = archived
    before = dachs.sql("SELECT count(*) FROM rapas.images")
    result = _plans(dachs, ingested["obs_id"], 50_000, 100, 20)
    assert result["jit"] == "off"
    assert result["fill"]["images"] == 500 and result["fill"]["sources"] >= 50_000
    plans = result["plans"]
    for name, plan in plans.items():
        assert "Seq Scan on sources" not in plan, (name, plan)
    assert "Nested Loop" in plans["light curve"] and "Hash Join" not in plans["light curve"]
    assert "sources_q3c_sources" in plans["light curve"] and "images_pkey" in plans["light curve"]
    assert "sources_q3c_sources" in plans["cone 1'"] and "sources_q3c_sources" in plans["cone 0.5 deg"]
    assert "sources_gaia_source_id" in plans["Gaia id"]
    assert "sources_vsx_name" in plans["VSX name"]
    assert "images_t_min" in plans["SIAP2 time"] or "images_t_max" in plans["SIAP2 time"]
    assert dachs.sql("SELECT count(*) FROM rapas.images") == before          # rolled back


def _partitions_read(plan):
    return set(re.findall(r"sources_sky\d+", plan))


def test_sky_partitions_keep_every_row_and_grant_and_a_cone_reads_only_its_region(dachs, archived):
    """res/partition.py on a synthetic archive (in a transaction rolled
    back): rapas.sources in 8 sky partitions of about equal size holds
    every row, TAP's grants and every index; a cone and a light curve read
    the partition of their position only, through its q3c index, and the
    light curve still joins its images by nested loop."""
    _, _, ingested = archived
    total = dachs.sql("SELECT count(*) FROM rapas.sources")[0][0]
    result = _plans(dachs, ingested["obs_id"], 50_000, 100, 20, partitions=8)
    assert len(result["partitions"]) == 8
    assert sum(result["partitions"]) == result["rows"] == result["fill"]["sources"] >= total + 50_000
    assert result["partitions"][-1] < 2 * result["partitions"][0]                 # about equal
    assert result["grants_kept"]
    plans = result["plans"]
    for name, plan in plans.items():
        assert "Seq Scan on sources" not in plan, (name, plan)
    for name in ("cone 1'", "light curve"):
        assert 1 <= len(_partitions_read(plans[name])) <= 2, (name, plans[name])
        assert "q3c_ang2ipix" in plans[name]
    assert "Nested Loop" in plans["light curve"] and "images_pkey" in plans["light curve"]
    assert len(_partitions_read(plans["Gaia id"])) == 8 and "gaia_source_id" in plans["Gaia id"]
    assert dachs.sql("SELECT relkind FROM pg_class WHERE oid = 'rapas.sources'::regclass") == [["r"]]


def test_every_source_value_served_is_the_catalogues(dachs, archived):
    """The binary COPY of ingest.py: TAP serves each catalogue value as
    written (real columns to float32), NaN, blank text and a Gaia id of 0
    as NULL, and the archive's source_id and obs_id."""
    _, result, ingested = archived
    obs_id = ingested["obs_id"]
    served = pyvo.dal.TAPService(dachs.url + "/tap").search(
        f"SELECT * FROM rapas.sources WHERE obs_id='{obs_id}' ORDER BY source_num",
        maxrec=100_000).to_table()
    written = Table.read(result.path("sources.fits"))
    assert len(served) == len(written) == result.summary["n_sources"]
    assert list(served["source_id"]) == [f"{obs_id}-{n:06d}" for n in written["source_num"]]
    assert set(served["obs_id"]) == {obs_id}
    text = [name for name in written.colnames if np.asarray(written[name]).dtype.kind in "US"]
    counted = dachs.sql("SELECT " + ", ".join(f"count(*) FILTER (WHERE {name} IS NULL), count(*) FILTER"
                                              f" (WHERE {name} = '')" for name in text)
                        + f" FROM rapas.sources WHERE obs_id='{obs_id}'")[0]
    for name in written.colnames:
        value, expected = served[name], np.asarray(written[name])
        if name in text:
            stripped = np.char.strip(expected.astype(str))
            assert list(np.ma.filled(value, "")) == list(stripped), name
            # blank is NULL in the database, never an empty string
            nulls, empties = counted[2 * text.index(name): 2 * text.index(name) + 2]
            assert (nulls, empties) == ((stripped == "").sum(), 0), name
        elif expected.dtype.kind == "f":
            assert np.array_equal(np.ma.getmaskarray(value), np.isnan(expected)), name
            kind = np.float32 if value.dtype == np.float32 else np.float64
            assert np.array_equal(np.ma.filled(value, 0), np.where(np.isnan(expected), 0, expected).astype(kind)), name
        else:
            null = expected == 0 if name == "gaia_source_id" else np.zeros(len(expected), bool)
            assert np.array_equal(np.ma.getmaskarray(value), null), name
            assert np.array_equal(np.ma.filled(value, 0), np.where(null, 0, expected)), name
    assert np.ma.getmaskarray(served["gaia_source_id"]).sum() > 0            # some unmatched: NULL tested


def _ingest(dachs, *args):
    return subprocess.run([DACHS_PYTHON, INGEST, *args], env=dachs.env, capture_output=True, text=True,
                          check=True)


def _delete_image_rows(dachs, obs_id):
    """Lose an image's rows (as "dachs drop rapas/q" loses all), its files staying in data/."""
    subprocess.run(["psql", "-q", "-d", dachs.dbname, "-c", f"DELETE FROM rapas.images WHERE obs_id='{obs_id}'"],
                   check=True, capture_output=True)


def test_catch_up_and_reingest_all_rebuild_rows_from_the_archived_products(dachs, archived):
    """After its rows are lost, an archived image comes back from its files
    (--catch-up: only what is missing), with its submitter; --all
    ingests every archived image again (a new contract), the same rows."""
    _, result, ingested = archived
    obs_id = ingested["obs_id"]
    image_sql = f"SELECT * FROM rapas.images WHERE obs_id='{obs_id}'"
    sources_sql = ("SELECT count(*), md5(string_agg(s::text, '|' ORDER BY source_id)) FROM rapas.sources AS s"
                   f" WHERE obs_id='{obs_id}'")
    image, sources = dachs.sql(image_sql), dachs.sql(sources_sql)
    assert sources[0][0] == result.summary["n_sources"]
    (dachs.resdir / "data" / obs_id / "submitter.txt").write_text("alice\n")   # as a member's job leaves it
    _delete_image_rows(dachs, obs_id)
    assert dachs.sql(image_sql) == [] and dachs.sql(sources_sql)[0][0] == 0
    caught_up = [json.loads(line) for line in _ingest(dachs, "--catch-up").stdout.splitlines()]
    assert [r["obs_id"] for r in caught_up] == [obs_id]          # the other archived images are left alone
    restored = dachs.sql(image_sql)
    submitter = [c[0] for c in dachs.sql("SELECT column_name FROM information_schema.columns WHERE table_schema"
                                         "='rapas' AND table_name='images' ORDER BY ordinal_position")].index(
                                             "submitted_by")
    assert restored[0][submitter] == "alice"
    assert restored[0][:submitter] + restored[0][submitter + 1:] == image[0][:submitter] + image[0][submitter + 1:]
    assert dachs.sql(sources_sql) == sources
    again = [json.loads(line) for line in _ingest(dachs, "--all", "--jobs", "2").stdout.splitlines()]
    assert obs_id in [r["obs_id"] for r in again]
    assert dachs.sql(image_sql) == restored and dachs.sql(sources_sql) == sources


def test_linked_products_are_the_archives_and_a_rerun_into_them_leaves_the_archive_intact(dachs, archived,
                                                                                           tmp_path):
    """--link hands a directory over: the archive's files are its files (no
    20 MB copy); the pipeline's next run into it writes new files, so the
    archived ones keep their bytes.  Without --link the files are copies."""
    import hashlib

    from processing.contract import PRODUCT_NAMES, clear_products
    _, result, ingested = archived
    copied = dachs.resdir / "data" / ingested["obs_id"] / "calibrated.fits"
    assert copied.stat().st_ino != (result.out_dir / "calibrated.fits").stat().st_ino
    handed = product_copies(result.out_dir, 1, tmp_path)[0]            # another image of the same products
    obs_id = json.loads((handed / "summary.json").read_text())["obs_id"]
    assert json.loads(_ingest(dachs, "--link", str(handed)).stdout)["obs_id"] == obs_id
    archived_dir = dachs.resdir / "data" / obs_id
    names = [name for name in PRODUCT_NAMES if (handed / name).is_file()]
    assert {"calibrated.fits", "sources.fits", "rapas.log", "summary.json"} <= set(names)
    assert all((archived_dir / name).stat().st_ino == (handed / name).stat().st_ino for name in names)
    before = {name: hashlib.sha256((archived_dir / name).read_bytes()).hexdigest() for name in names}
    clear_products(handed)                                       # what a re-run does first
    (handed / "rapas.log").write_text("a new run\n")
    (handed / "summary.json").write_text("{}")
    assert not (handed / "calibrated.fits").exists()
    assert {name: hashlib.sha256((archived_dir / name).read_bytes()).hexdigest() for name in names} == before
    assert dachs.sql(f"SELECT count(*) FROM rapas.sources WHERE obs_id='{obs_id}'")[0][0] == ingested["n_sources"]
    dachs.remove(obs_id)

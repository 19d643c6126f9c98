"""The archive as a user meets it: pyvo against a throwaway DaCHS instance."""
import html
import io
import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from xml.etree import ElementTree

import numpy as np
import pytest
import pyvo
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS

from dachs_instance import DACHS_PYTHON, REPO
from test_site_file import PLACEHOLDERS

pytestmark = pytest.mark.archive

OBSCORE_MANDATORY = [
    "dataproduct_type", "calib_level", "obs_collection", "obs_id", "obs_publisher_did", "access_url",
    "access_format", "access_estsize", "target_name", "s_ra", "s_dec", "s_fov", "s_region",
    "s_resolution", "s_xel1", "s_xel2", "t_min", "t_max", "t_exptime", "t_resolution", "t_xel",
    "em_min", "em_max", "em_res_power", "em_xel", "o_ucd", "pol_states", "pol_xel", "facility_name",
    "instrument_name"]


def siap2(dachs):
    return pyvo.dal.SIA2Service(dachs.url + "/rapas/q/siap2/siap2.xml", check_baseurl=False)


def tap(dachs):
    return pyvo.dal.TAPService(dachs.url + "/tap")


def test_siap2_finds_the_image_by_position_band_time_collection_facility(dachs, archived):
    sim, result, ingested = archived
    s = result.summary
    mid = Time(s["mjd_mid"], format="mjd")
    service = siap2(dachs)
    hits = [
        service.search(pos=(s["ra_center"] * u.deg, s["dec_center"] * u.deg, 0.01 * u.deg)),
        service.search(band=(500e-9 * u.m, 510e-9 * u.m)),            # inside Gaia G
        service.search(time=(mid - 1 * u.min, mid + 1 * u.min)),
        service.search(collection="RAPAS"),
        service.search(facility="RAPAS-SIM 0.4m"),
    ]
    for found in hits:
        assert len(found) == 1
        assert found.to_table()["obs_publisher_did"][0] == ingested["obs_publisher_did"]
    misses = [
        service.search(pos=((s["ra_center"] + 5) * u.deg, s["dec_center"] * u.deg, 0.1 * u.deg)),
        service.search(band=(2e-6 * u.m, 2.2e-6 * u.m)),
        service.search(time=(mid - 2 * u.day, mid - 1 * u.day)),
        service.search(collection="OTHER"),
    ]
    assert [len(m) for m in misses] == [0, 0, 0, 0]


def test_access_url_delivers_the_calibrated_fits_with_its_wcs(dachs, archived):
    sim, result, _ = archived
    row = siap2(dachs).search(collection="RAPAS").to_table()[0]
    assert row["access_format"] == "image/fits"
    with urllib.request.urlopen(row["access_url"], timeout=30) as response:
        delivered = fits.open(io.BytesIO(response.read()))
    local = fits.getheader(result.path("calibrated.fits"))
    assert delivered[0].header["RP_ZP"] == result.summary["zero_point"]
    corners = np.array([[0, 0], [1023, 0], [1023, 1023], [0, 1023], [511.5, 511.5]])
    got = WCS(delivered[0].header).all_pix2world(corners, 0)
    want = WCS(local).all_pix2world(corners, 0)
    assert np.allclose(got, want, atol=1e-9)
    # and it is the true sky: within 0.15 arcsec (1/8 px) of the simulation's
    # WCS even at the corners, where the distortion fit extrapolates most
    true = sim.true_wcs.all_pix2world(corners, 0)
    assert np.max(np.abs((got - true) * [np.cos(np.radians(20.0)), 1])) * 3600 < 0.15


def test_adql_cone_on_sources(dachs, archived):
    _, result, ingested = archived
    s = result.summary
    ra0, dec0, radius = s["ra_center"], s["dec_center"], 0.05
    found = tap(dachs).search(
        "SELECT obs_id, ra, dec, mag_cal, mag_cal_err, gaia_source_id FROM rapas.sources "
        f"WHERE 1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra0}, {dec0}, {radius}))").to_table()
    local = Table.read(result.path("sources.fits"))
    d = np.degrees(np.arccos(np.clip(np.sin(np.radians(local["dec"])) * np.sin(np.radians(dec0))
                                     + np.cos(np.radians(local["dec"])) * np.cos(np.radians(dec0))
                                     * np.cos(np.radians(local["ra"] - ra0)), -1, 1)))
    assert len(found) == int((d < radius).sum()) > 20
    assert set(found["obs_id"]) == {ingested["obs_id"]}
    assert str(found["mag_cal"].unit) == "mag"
    total = tap(dachs).search(f"SELECT COUNT(*) AS n FROM rapas.sources WHERE obs_id='{ingested['obs_id']}'")
    assert total.to_table()["n"][0] == result.summary["n_sources"] == ingested["n_sources"]


def test_calibrated_magnitudes_in_the_archive_match_truth(dachs, archived):
    sim, _, ingested = archived
    rows = tap(dachs).search(
        "SELECT gaia_source_id, mag_cal, snr FROM rapas.sources "
        f"WHERE obs_id='{ingested['obs_id']}' AND snr > 50 AND flags = 0 AND gaia_source_id IS NOT NULL"
    ).to_table()
    truth = {int(i): m for i, m in zip(sim.truth["source_id"], sim.truth["ref_mag"])}
    resid = np.array([m - truth[int(i)] for i, m in zip(rows["gaia_source_id"], rows["mag_cal"])])
    assert len(resid) > 50
    from astropy.stats import mad_std
    assert abs(np.median(resid)) < 0.01 and mad_std(resid) < 0.03


def test_obscore_rows_have_every_mandatory_field(dachs, archived):
    _, result, ingested = archived
    rows = tap(dachs).search("SELECT * FROM ivoa.obscore WHERE obs_collection='RAPAS'").to_table()
    assert len(rows) == 1
    row = rows[0]
    for name in ("dataproduct_type", "calib_level", "obs_collection", "obs_id", "obs_publisher_did",
                 "access_url", "access_format", "s_ra", "s_dec", "s_fov", "s_region", "s_resolution",
                 "t_min", "t_max", "t_exptime", "em_min", "em_max", "o_ucd", "facility_name",
                 "instrument_name", "target_name", "s_xel1", "s_xel2"):
        assert not np.ma.is_masked(row[name]), name
    assert set(OBSCORE_MANDATORY) <= set(rows.colnames)
    s = result.summary
    assert row["dataproduct_type"] == "image" and row["calib_level"] == 2
    assert row["t_min"] == pytest.approx(s["mjd_start"]) and row["t_max"] == pytest.approx(s["mjd_end"])
    assert row["t_exptime"] == pytest.approx(60.0)
    assert row["em_min"] == pytest.approx(330e-9) and row["em_max"] == pytest.approx(1050e-9)
    assert row["s_resolution"] == pytest.approx(s["fwhm_arcsec"], rel=1e-5)
    assert row["obs_publisher_did"] == ingested["obs_publisher_did"]


def test_served_source_columns_are_the_products_columns(dachs, archived):
    """One contract (processing/contract.py): the rapas.sources columns TAP
    serves and the catalogue the pipeline writes agree in name, order, unit
    and UCD; only the archive's identifiers are the archive's own."""
    from astropy.io.votable import parse_single_table
    _, result, _ = archived
    served = tap(dachs).search("SELECT column_name, unit, ucd FROM tap_schema.columns"
                               " WHERE table_name='rapas.sources' ORDER BY column_index").to_table()
    def text(value):
        return "" if np.ma.is_masked(value) else str(value)

    archive = [(text(r["column_name"]), text(r["unit"]), text(r["ucd"])) for r in served]
    assert archive[:2] == [("source_id", "", "meta.id;meta.main"), ("obs_id", "", "meta.id;obs")]
    votable = parse_single_table(result.path("sources.vot"))
    assert [(f.name, text(f.unit or ""), text(f.ucd)) for f in votable.fields] == archive[2:]
    fits_table = Table.read(result.path("sources.fits"))         # FITS has no UCDs
    assert [(c, text(fits_table[c].unit or "")) for c in fits_table.colnames] == [a[:2] for a in archive[2:]]


def test_image_row_carries_the_calibration(dachs, archived):
    _, result, ingested = archived
    row = tap(dachs).search(f"SELECT * FROM rapas.images WHERE obs_id='{ingested['obs_id']}'").to_table()[0]
    s = result.summary
    assert row["zero_point"] == s["zero_point"]                   # double precision, not rounded
    for column, key in (("limiting_mag", "limiting_mag_5sigma"), ("fwhm", "fwhm_arcsec"),
                        ("astrometric_rms", "astrometric_rms_arcsec"), ("exptime", "exptime")):
        assert row[column] == pytest.approx(s[key], rel=1e-6), column
    assert (row["n_sources"], row["n_calibrators"], row["filter"], row["wcs_source"]) == (
        s["n_sources"], s["n_calibrators"], "G", "refined")
    assert row["checksum"] == s["checksum_sha256"]


def test_datalink_lists_products_that_resolve(dachs, archived):
    _, result, ingested = archived
    url = dachs.url + "/rapas/q/dl/dlmeta?ID=" + urllib.parse.quote(ingested["obs_publisher_did"])
    links = pyvo.dal.adhoc.DatalinkResults.from_result_url(url).to_table()
    by_name = {link.rsplit("/", 1)[-1].split("?")[0]: sem for link, sem in
               zip(links["access_url"], links["semantics"]) if link}
    for name in ("sources.vot", "sources.fits", "zeropoint.png", "rapas.log", "summary.json"):
        assert name in by_name, name
    # one preview: DaCHS's own link to the pipeline's preview.png
    previews = [link for link, sem in zip(links["access_url"], links["semantics"]) if sem == "#preview"]
    assert len(previews) == 1
    with urllib.request.urlopen(previews[0], timeout=30) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert response.read() == result.path("preview.png").read_bytes()
    queries = [urllib.parse.unquote(link) for link in links["access_url"] if "QUERY=" in link]
    assert any("FROM rapas.sources" in q for q in queries) and any("FROM rapas.notable" in q for q in queries)
    for link in links["access_url"]:
        if link:
            with urllib.request.urlopen(link, timeout=30) as response:
                assert response.status == 200 and len(response.read()) > 0


def test_failed_ingestion_leaves_the_archive_unchanged(dachs, archived, tmp_path):
    _, result, ingested = archived
    count_sql = "SELECT (SELECT count(*) FROM rapas.images), (SELECT count(*) FROM rapas.sources)," \
                " (SELECT count(*) FROM dc.products WHERE accref LIKE 'rapas/%')"
    before = dachs.sql(count_sql)
    files_before = sorted(p.name for p in (dachs.resdir / "data" / ingested["obs_id"]).iterdir())
    broken = tmp_path / "broken"
    shutil.copytree(result.out_dir, broken)
    data = (broken / "sources.fits").read_bytes()
    (broken / "sources.fits").write_bytes(data[: len(data) // 2])       # corrupt source table
    run = dachs.ingest(broken, check=False)
    assert run.returncode == 1 and "rolled back" in run.stderr
    assert dachs.sql(count_sql) == before
    assert sorted(p.name for p in (dachs.resdir / "data" / ingested["obs_id"]).iterdir()) == files_before
    # the server still serves the earlier rows
    assert len(siap2(dachs).search(collection="RAPAS")) == 1


def test_reingesting_the_same_file_replaces_rows(dachs, archived):
    _, result, ingested = archived
    again = json.loads(dachs.ingest(result.out_dir).stdout)
    assert again == ingested
    counts = dachs.sql(f"SELECT (SELECT count(*) FROM rapas.images WHERE obs_id='{ingested['obs_id']}'),"
                       f" (SELECT count(*) FROM rapas.sources WHERE obs_id='{ingested['obs_id']}')")
    assert counts == [[1, result.summary["n_sources"]]]


def test_alerts_in_a_field_become_targets_once_and_are_measured(dachs, archived, tmp_path):
    """Astro-COLIBRI alerts with a position error of 10 arcsec or less found
    by a frame's enrichment become targets (once, by name and position) and
    are measured on the frame; a vaguer alert is not followed."""
    _, result, ingested = archived
    product = tmp_path / "alerts"
    shutil.copytree(result.out_dir, product)
    summary = json.loads((product / "summary.json").read_text())
    ra, dec = summary["ra_center"], summary["dec_center"]
    summary["notable_objects"] = list(summary["notable_objects"] or []) + [
        dict(catalogue="colibri", name="GRB 260314A", kind="transient", object_type="GRB", ra=ra + 0.01, dec=dec,
             error_arcsec=3.0, event_time="2026-03-14T20:00:00"),
        dict(catalogue="colibri", name="S260314x", kind="transient", object_type="GW", ra=ra, dec=dec + 0.01,
             error_arcsec=600.0, event_time="2026-03-14T19:00:00")]
    (product / "summary.json").write_text(json.dumps(summary))
    try:
        first = json.loads(dachs.ingest(product).stdout)
        second = json.loads(dachs.ingest(product).stdout)
        assert first["new_targets"] == ["GRB 260314A"] and second["new_targets"] == []
        targets = dachs.sql("SELECT name, kind, origin, added_by, alert_mjd, backfill FROM rapas.targets")
        assert [t[:4] for t in targets] == [["GRB 260314A", "GRB", "Astro-COLIBRI",
                                             f"enrichment of {ingested['obs_id']}"]]
        assert abs(targets[0][4] - 61113.8333) < 1e-3 and targets[0][5].startswith("done")
        rows = dachs.sql("SELECT obs_id, method, flux IS NOT NULL, mag_limit > 18 FROM rapas.lightcurves"
                         " WHERE target='GRB 260314A'")
        assert rows == [[ingested["obs_id"], "PSF", True, True]]
        # a backfill that died with its server (no progress for an hour, its rows missing) is run again
        dachs.python("from gavo import base\nwith base.getWritableAdminConn() as c:\n"
                     "    c.execute(\"DELETE FROM rapas.lightcurves WHERE target='GRB 260314A'\")\n"
                     "    c.execute(\"UPDATE rapas.targets SET backfill='measuring: 0 of 1 archived images',"
                     " backfill_at=backfill_at - INTERVAL '1 hour' WHERE name='GRB 260314A'\")")
        resumed = subprocess.run([DACHS_PYTHON, str(REPO / "inputs/rapas/res/lightcurve.py"), "--resume"],
                                 env=dachs.env, capture_output=True, text=True, check=True)
        assert "GRB 260314A" in resumed.stdout
        assert dachs.sql("SELECT count(*) FROM rapas.lightcurves WHERE target='GRB 260314A'") == [[1]]
        assert dachs.sql("SELECT backfill FROM rapas.targets WHERE name='GRB 260314A'")[0][0].startswith("done")
        # the S/N from which a forced measurement is a magnitude comes from the site configuration
        (tmp_path / "site.toml").write_text("forced_detection_snr = 1e6\n")
        strict = subprocess.run([DACHS_PYTHON, "-c", "import sys\nfrom gavo import api\n"
                                 "lc, _ = api.loadPythonModule(sys.argv[1])\nprint(lc.detection_snr())",
                                 str(REPO / "inputs/rapas/res/lightcurve")],
                                env=dict(dachs.env, RAPAS_CONFIG=str(tmp_path / "site.toml")),
                                capture_output=True, text=True, check=True)
        assert float(strict.stdout) == 1e6
    finally:
        dachs.ingest(result.out_dir)                 # the frame's own summary back


@pytest.fixture(scope="module")
def reference_tables(dachs, archived, tmp_path_factory):
    """The local reference catalogues loaded too ("make refcat"), from the
    archived frame's sky, so validators see every table the archive serves."""
    from astropy.table import Table
    sim = archived[0]
    work = tmp_path_factory.mktemp("reftables")
    sim.catalogue.write(work / "gaia.fits")
    dachs.load_reference_catalogue(work / "gaia.fits", "archive")
    cat = sim.catalogue[:3]
    dachs.load_crossid_catalogues({
        "simbad_basic": Table({"main_id": ["A", "B", "C"], "ra": cat["ra"], "dec": cat["dec"],
                               "otype": ["*", "V*", "QSO"]}),
        "vsx": Table({"Name": ["V1"], "RAJ2000": cat["ra"][1:2], "DEJ2000": cat["dec"][1:2], "Type": ["EW"],
                      "Period": [0.4]}),
        "milliquas": Table({"Name": ["Q1"], "RAJ2000": cat["ra"][2:3], "DEJ2000": cat["dec"][2:3], "Type": ["Q"],
                            "Rmag": [18.5], "z": [1.2]})}, "archive")
    return ("rapas/q", "rapas/refcat", "rapas/localcat")


def test_dachs_val_and_regression_tests(dachs, archived, reference_tables):
    val = dachs.dachs("val", "-c", *reference_tables, check=False)
    assert val.returncode == 0 and val.stdout.count("-- OK") == 3, val.stdout + val.stderr
    regression = dachs.dachs("test", "-u", dachs.url, "rapas/q", check=False)
    assert regression.returncode == 0, regression.stdout + regression.stderr
    assert regression.stdout.startswith("0 of 6 bad")


#: taplint warnings that are DaCHS 2.7's own (its mixins, its TAP capabilities,
#: its upload serialisation), by code; any other is the project's
DACHS_TAPLINT_WARNINGS = {
    "CAP-CPUL",     # VOSI endpoints of //tap#run under __system__/tap/run/
    "CAP-CULF",     # DaCHS's custom ADQL feature type
    "MDQ-CCAS",     # camelCase columns of //siap#pgs (centerAlpha ...) folded by PostgreSQL
    "MDQ-DRXT",     # xtypes of //siap#pgs (dateObs, embargo) and //obscore (t_min, t_max)
    "QGE-YXDL", "QPO-YXDL", "QAS-YXDL",     # DaCHS's xtype "mjd" on ObsCore times
    "UPL-YAR1",     # arraysize="1" in DaCHS's upload echo
}


def test_taplint_reports_no_errors_and_only_dachs_warnings(dachs, archived, reference_tables):
    run = subprocess.run(["stilts", "taplint", f"tapurl={dachs.url}/tap", "interface=tap1.1", "report=EW",
                          "maxrepeat=200"], capture_output=True, text=True, timeout=600)
    errors = [line for line in run.stdout.splitlines() if line.startswith("E-")]
    assert errors == [], "\n".join(errors[:30])
    assert "Totals:" in run.stdout
    warnings = [line for line in run.stdout.splitlines() if line.startswith("W-")]
    ours = [line for line in warnings if line[2:10] not in DACHS_TAPLINT_WARNINGS]
    assert ours == [], "\n".join(ours[:30])
    # the examples were found and every one of them parses as ADQL
    assert "Section EXA" in run.stdout and not any(line.startswith("W-EXA-EXVL") for line in warnings)
    assert not any(re.match(r"W-EXA-(GONO|EXNO)", line) for line in warnings)


def test_tap_examples_cover_the_users_queries_and_run(dachs, archived):
    with urllib.request.urlopen(dachs.url + "/tap/examples", timeout=30) as response:
        page = response.read().decode()
    queries = [html.unescape(q) for q in re.findall(r'property="query"[^>]*>(.*?)</pre>', page, re.S)]
    titles = re.findall(r'property="name"[^>]*>(.*?)<', page)
    assert len(queries) >= 5, titles
    text = " ".join(queries)
    for needed in ("FROM rapas.sources", "CONTAINS(POINT", "rapas.lightcurves", "ivoa.obscore AS o JOIN rapas.images",
                   "filter = 'G'"):
        assert needed in text, needed
    for query in queries:
        tap(dachs).search(query, maxrec=5)            # each runs as written


def test_obscore_obs_id_is_the_archives_obs_id(dachs, archived):
    _, _, ingested = archived
    rows = tap(dachs).search("SELECT o.obs_id, o.obs_publisher_did, o.o_ucd, i.filter FROM ivoa.obscore AS o"
                             " JOIN rapas.images AS i ON o.obs_id = i.obs_id").to_table()
    assert list(rows["obs_id"]) == [ingested["obs_id"]]
    assert rows["obs_publisher_did"][0] == ingested["obs_publisher_did"] and rows["o_ucd"][0] == "phot.count;em.opt"


def test_text_products_are_served_as_plain_text(dachs, archived):
    _, _, ingested = archived
    url = f"{dachs.url}/rapas/q/files/static/{ingested['obs_id']}/rapas.log"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_dachs_javascript_is_served_from_debians_packages(dachs):
    """DaCHS assembles jquery-gavo.js from Debian's jQuery and jQuery UI; it
    asked for a file Debian 12's jQuery UI 1.13 no longer has (HTTP 500)."""
    with urllib.request.urlopen(dachs.url + "/static/js/jquery-gavo.js", timeout=30) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/javascript")
        script = response.read().decode()
    assert "jQuery" in script and "$.widget=" in script and len(script) > 100_000


def test_datalinklint_finds_no_error_of_the_projects(dachs, archived):
    _, _, ingested = archived
    url = dachs.url + "/rapas/q/dl/dlmeta?ID=" + urllib.parse.quote(ingested["obs_publisher_did"])
    run = subprocess.run(["stilts", "datalinklint", f"votable={url}"], capture_output=True, text=True, timeout=300)
    assert "Totals:" in run.stdout, run.stdout + run.stderr
    errors = [line for line in run.stdout.splitlines() if line.startswith("E-")]
    # DaCHS 2.7's dlmeta answers text/xml (DLCT) and gives service_def the
    # DataLink 1.0 UCD (RUCD); STILTS 3.4.7's DataLink vocabulary predates
    # "documentation", which the current one defines for processing logs
    # (the reduction log's semantics)
    theirs = [line for line in errors if line[2:6] in ("DLCT", "RUCD")
              or (line[2:6] == "SMCO" and "'documentation'" in line)]
    assert [line for line in errors if line not in theirs] == []


def _records(dachs):
    """{identifier: ri:Resource element} of the OAI-PMH ListRecords answer, and its bytes."""
    query = urllib.parse.urlencode({"verb": "ListRecords", "metadataPrefix": "ivo_vor"})
    with urllib.request.urlopen(f"{dachs.url}/oai.xml?{query}", timeout=60) as response:
        document = response.read()
    resources = ElementTree.fromstring(document).iter("{http://www.ivoa.net/xml/RegistryInterface/v1.0}Resource")
    return {resource.findtext("identifier"): resource for resource in resources}, document


def test_registry_publishes_valid_complete_records_of_every_service(dachs, archived):
    dachs.publish()
    records, document = _records(dachs)
    assert dachs.validate_xml(document) is None, dachs.validate_xml(document)
    text = document.decode()
    assert [p for p in PLACEHOLDERS if p in text] == []
    authority = "ivo://rapas.test"
    kinds = {identifier: resource.get("{http://www.w3.org/2001/XMLSchema-instance}type")
             for identifier, resource in records.items()}
    assert kinds[authority] == "vg:Authority" and kinds[authority + "/org"] == "vr:Organisation"
    assert kinds[authority + "/__system__/services/registry"] == "vg:Registry"
    capabilities = {identifier: {c.get("standardID") for c in resource.findall("capability")}
                    for identifier, resource in records.items()}
    tap_record = records[authority + "/tap"]
    assert tap_record.find("capability/dataModel").get("ivo-id") == "ivo://ivoa.net/std/obscore#core-1.1"
    assert {"ivo://ivoa.net/std/TAP", "ivo://ivoa.net/std/DALI#examples"} <= capabilities[authority + "/tap"]
    tables = {table.findtext("name") for table in tap_record.iter("table")}
    assert {"ivoa.obscore", "rapas.images", "rapas.sources", "rapas.targets", "rapas.lightcurves"} <= tables
    assert {"ivo://ivoa.net/std/SIA#query-2.0", "ivo://ivoa.net/std/DataLink#links-1.0"} \
        <= capabilities[authority + "/rapas/q/siap2"]
    assert "ivo://ivoa.net/std/ConeSearch" in capabilities[authority + "/rapas/q/cone"]
    # the holdings' coverage: the frame's sky cell and its time
    _, result, _ = archived
    coverage = records[authority + "/rapas/q/siap2"].find("coverage")
    assert coverage.findtext("spatial").startswith("6/")
    t_min, t_max = map(float, coverage.findtext("temporal").split())
    assert t_min <= result.summary["mjd_start"] <= result.summary["mjd_end"] <= t_max
    assert records[authority + "/rapas/q/siap2"].find("curation/contact/email").text == "rapas-archive@localhost"

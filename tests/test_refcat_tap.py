"""The pipeline's TAP reference catalogue (its configured default kind),
against the archive's own TAP: gaiadr3.gaia_source served by the throwaway
DaCHS from a simulated field's catalogue ("make refcat")."""
import numpy as np
import pytest
import pyvo

from processing import refcat
from processing.config import Config
from processing.pipeline import reduce
from processing.simulate import simulate_frame

pytestmark = pytest.mark.archive


@pytest.fixture(scope="module")
def served(dachs, tmp_path_factory):
    work = tmp_path_factory.mktemp("refcat")
    sim = simulate_frame(shape=(1024, 1024), n_stars=800, seed=44, ra=35.0, dec=-45.0,
                         header_wcs="perturbed", wcs_offset_arcsec=3.0, wcs_rotation_deg=0.1)
    sim.catalogue.write(work / "gaia.fits")
    tap_url = dachs.load_reference_catalogue(work / "gaia.fits", "refcat")
    return sim, tap_url, work


def test_the_local_table_has_the_esa_column_names(served):
    sim, tap_url, _ = served
    columns = pyvo.dal.TAPService(tap_url).search(
        "SELECT column_name FROM tap_schema.columns WHERE table_name='gaiadr3.gaia_source'").to_table()
    assert set(refcat.COLUMNS) <= set(columns["column_name"])


def test_cone_query_through_pyvo_returns_the_field(served):
    sim, tap_url, _ = served
    cat = refcat.query_tap(tap_url, "gaiadr3.gaia_source", 35.0, -45.0, 0.05, 30.0, timeout=30)
    c = sim.catalogue
    d = np.degrees(np.arccos(np.clip(np.sin(np.radians(c["dec"])) * np.sin(np.radians(-45.0))
                                     + np.cos(np.radians(c["dec"])) * np.cos(np.radians(-45.0))
                                     * np.cos(np.radians(c["ra"] - 35.0)), -1, 1)))
    assert len(cat) == int((d < 0.05).sum()) > 10
    assert set(cat["source_id"]) == set(c["source_id"][d < 0.05])
    assert np.isfinite(cat["phot_bp_mean_mag"]).all()


def test_reduction_calibrated_over_tap_matches_the_file_and_the_truth(served):
    sim, tap_url, work = served
    image = sim.write(work / "frame.fits")
    over_tap = reduce(image, work / "tap", Config(enrichment={}, refcat={"kind": "tap", "url": tap_url,
                                                          "table": "gaiadr3.gaia_source", "timeout": 30}))
    from_file = reduce(image, work / "file", Config(enrichment={}, refcat={"kind": "file", "path": str(work / "gaia.fits")}))
    s, f = over_tap.summary, from_file.summary
    assert s["refcat"] == "tap" and s["n_calibrators"] >= 50
    # the same calibration as from the file (the table holds magnitudes as
    # 32-bit reals, as the ESA archive does; the file has doubles) ...
    assert s["zero_point"] == pytest.approx(f["zero_point"], abs=1e-5)
    assert s["colour_term"] == pytest.approx(f["colour_term"], abs=1e-5)
    assert s["n_calibrators"] == f["n_calibrators"]
    # ... and a sane one.  (The 0.005 mag science tolerance is asserted on a
    # 2048x2048 frame in test_pipeline_truth; on this 1024x1024 frame the
    # total-flux aperture correction rests on about 30 stars.)
    assert abs(s["zero_point"] - sim.params["zero_point"]) <= 0.01
    assert abs(s["colour_term"] - sim.params["colour_term"]) <= 0.01


def test_vizier_column_names_give_the_same_stars(served, dachs):
    """refcat 'columns = vizier': the same ADQL in VizieR's I/355 names."""
    sim, tap_url, _ = served
    dachs.load_vizier_gaia(sim.catalogue)
    esa = refcat.query_tap(tap_url, "gaiadr3.gaia_source", 35.0, -45.0, 0.1, 21.0, timeout=30)
    vizier = refcat.query_tap(tap_url, "i355.gaiadr3", 35.0, -45.0, 0.1, 21.0, timeout=30, columns="vizier")
    assert len(vizier) == len(esa) > 10
    esa.sort("source_id")
    vizier.sort("source_id")
    for name in refcat.COLUMNS:
        assert np.allclose(vizier[name], esa[name], equal_nan=True), name
    assert (vizier["ref_epoch"] == 2016.0).all()

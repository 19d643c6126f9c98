"""Shared fixtures.  Simulated frames are rendered once per session."""
import os
import sys
import warnings

import pytest

sys.path.insert(0, os.path.dirname(__file__))

os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")

REALDATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "realdata")


@pytest.fixture(scope="session", autouse=True)
def catalogue_cache(tmp_path_factory):
    """Reference-catalogue fields fetched by the tests are cached here, not
    in the user's cache directory."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["RAPAS_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def truth_run(tmp_path_factory):
    """A 2048x2048 frame with 3000 stars whose header WCS is off by 5 arcsec
    and 0.2 deg, reduced against its own Gaia-schema catalogue."""
    from processing.config import Config
    from processing.pipeline import reduce
    from processing.simulate import simulate_frame
    work = tmp_path_factory.mktemp("truth")
    sim = simulate_frame(shape=(2048, 2048), n_stars=3000, seed=7, pixscale=1.0,
                         header_wcs="perturbed", wcs_offset_arcsec=5.0, wcs_rotation_deg=0.2)
    image = sim.write(work / "sim.fits")
    sim.catalogue.write(work / "refcat.fits")
    result = reduce(image, work / "out", Config(enrichment={}, refcat={"kind": "file", "path": str(work / "refcat.fits")}))
    return sim, result


@pytest.fixture(scope="session")
def realdata():
    path = os.path.abspath(REALDATA)
    if not os.path.isdir(path):
        pytest.fail(f"the shared real frames are missing: {path}")
    return path


@pytest.fixture(scope="session")
def dachs(tmp_path_factory):
    """The throwaway DaCHS instance (started once, torn down at the end)."""
    from dachs_instance import DachsInstance
    instance = DachsInstance(tmp_path_factory.mktemp("dachs") / "root")
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def archived(dachs, tmp_path_factory):
    """A simulated frame reduced by the pipeline and ingested into the archive."""
    from processing.config import Config
    from processing.pipeline import reduce
    from processing.simulate import simulate_frame
    work = tmp_path_factory.mktemp("archived")
    sim = simulate_frame(shape=(1024, 1024), n_stars=800, seed=5, ra=150.0, dec=20.0,
                         header_wcs="perturbed", wcs_offset_arcsec=3.0, wcs_rotation_deg=0.1)
    image = sim.write(work / "frame.fits")
    sim.catalogue.write(work / "refcat.fits")
    result = reduce(image, work / "out", Config(enrichment={}, refcat={"kind": "file", "path": str(work / "refcat.fits")}))
    import json
    ingested = json.loads(dachs.ingest(result.out_dir).stdout)
    return sim, result, ingested

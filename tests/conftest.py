"""Shared fixtures.  Simulated frames are rendered once per session."""
import os
import warnings

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")

REALDATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "realdata")


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
    result = reduce(image, work / "out", Config(refcat={"kind": "file", "path": str(work / "refcat.fits")}))
    return sim, result


@pytest.fixture(scope="session")
def realdata():
    path = os.path.abspath(REALDATA)
    if not os.path.isdir(path):
        pytest.fail(f"the shared real frames are missing: {path}")
    return path

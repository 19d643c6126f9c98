"""Shared fixtures.  Simulated frames are rendered once per session."""
import os
import sys
import warnings

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from dachs_instance import DachsInstance  # noqa: E402
from processing.refcat import propagate  # noqa: E402
from processing.simulate import simulate_frame  # noqa: E402

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


# ---- the reduction service's instance --------------------------------------------
MAX_UPLOAD = 12_000_000
SKY = dict(shape=(768, 768), n_stars=500, seed=21, ra=210.0, dec=-12.0, pixscale=1.2,
           header_wcs="perturbed", wcs_offset_arcsec=3.0, wcs_rotation_deg=0.1)


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    """The reduction service's DaCHS (shared by the service and light-curve tests): its
    reference catalogue (RAPAS_REFCAT) is the sky SKY; members alice and bob (rapas), mallory (not)."""
    work = tmp_path_factory.mktemp("service")
    sky = simulate_frame(**SKY, noise_seed=0)
    sky.catalogue.write(work / "refcat.fits")
    instance = DachsInstance(work / "root", max_jobs=2, max_upload=MAX_UPLOAD,
                             server_env={"RAPAS_REFCAT": str(work / "refcat.fits"),
                                         "RAPAS_CONFIG": str(work / "site.toml"),
                                         "RAPAS_RECOVERY_INTERVAL": "3"})
    # the site configuration the jobs' pipeline reads: VSX from the archive's
    # own TAP, the other services off (they are tested in test_enrichment)
    (work / "site.toml").write_text(
        "".join(f"[enrichment.{name}]\nenabled = false\n" for name in ("simbad", "milliquas", "skybot", "colibri"))
        + f'[enrichment.vsx]\nurl = "{instance.url}/tap"\ntable = "localcat.vsx"\ntimeout = 20\n')
    try:
        instance.start()
        instance.load_crossid_catalogues({"vsx": _variables(sky)}, "service")
        instance.add_user("alice", "s3cret", "rapas")
        instance.add_user("bob", "b0bb0b", "rapas")        # another member
        instance.add_user("mallory", "hunter2")          # a DaCHS user outside the network
        instance.work, instance.sky = work, sky
        instance.jobs_url = instance.url + "/rapas/q/reduce/async"
        yield instance
    finally:
        instance.stop()


VARIABLES = ("V0001 Sim", "V0002 Sim", "V0003 Sim")


def _variables(sky):
    """A VSX-like table naming three bright isolated stars of the sky (J2000 positions)."""
    from astropy.table import Table
    t = sky.truth
    order = np.argsort(t["ref_mag"])
    pick = [k for k in order if 14 < t["ref_mag"][k] < 16 and not t["saturated"][k]
            and np.sort(np.hypot(t["x"] - t["x"][k], t["y"] - t["y"][k]))[1] > 10][:len(VARIABLES)]
    ra, dec = propagate(t["ra"][pick], t["dec"][pick], t["pmra"][pick], t["pmdec"][pick], 2000.0 - 2016.0)
    return Table({"Name": list(VARIABLES), "RAJ2000": ra, "DEJ2000": dec, "Type": ["EA"] * len(pick),
                  "Period": [1.1, 2.2, 3.3][:len(pick)]})



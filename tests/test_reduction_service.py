"""The UWS reduction service, end to end, against its own throwaway DaCHS.

Frames are exposures of one simulated sky (same stars, different noise);
the service's reference catalogue (RAPAS_REFCAT) is that sky's catalogue.
"""
import concurrent.futures
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import pyvo
from astropy.io import fits
from astropy.stats import mad_std

from conftest import SKY, VARIABLES
from processing.simulate import simulate_frame
from uws_client import UWSClient

pytestmark = pytest.mark.archive


#: bytes that begin like FITS and are not
NOT_FITS = b"SIMPLE  = this is a shopping list\n" * 200


def exposure(service, noise_seed, **header):
    """A FITS exposure of the service's sky with its own noise."""
    sim = simulate_frame(**SKY, noise_seed=noise_seed)
    for key, value in header.items():
        sim.header[key] = value
    return sim.write(service.work / f"exp{noise_seed}.fits")


def error_message(job):
    """The errorSummary text of a job document ('' when there is none)."""
    return job.errorsummary.message.content if job.errorsummary else ""


def alice(service):
    return UWSClient(service.jobs_url, auth=("alice", "s3cret"))


def counts(service):
    return service.sql("SELECT (SELECT count(*) FROM rapas.images), (SELECT count(*) FROM rapas.sources),"
                       " (SELECT count(*) FROM dc.products WHERE accref LIKE 'rapas/%')")[0]


def test_only_network_members_create_jobs_and_queries_stay_public(service):
    frame = exposure(service, 1)
    assert UWSClient(service.jobs_url).create(frame).status_code == 401
    assert UWSClient(service.jobs_url, auth=("mallory", "hunter2")).create(frame).status_code in (401, 403)
    assert UWSClient(service.jobs_url, auth=("alice", "wrong")).create(frame).status_code == 401
    # anonymous queries answer, with what the archive holds
    tap = pyvo.dal.TAPService(service.url + "/tap")
    n_images = counts(service)[0]
    assert tap.search("SELECT COUNT(*) AS n FROM rapas.images").to_table()["n"][0] == n_images
    sia = pyvo.dal.SIA2Service(service.url + "/rapas/q/siap2/siap2.xml", check_baseurl=False)
    found = sia.search(collection="RAPAS")
    assert len(found) == n_images and "obs_publisher_did" in found.fieldnames


def test_end_to_end_submission_is_archived_and_matches_truth(service):
    client = alice(service)
    job_url, job = client.submit(exposure(service, 2))
    assert job.phase == "COMPLETED", error_message(job)
    names = {r.id_ for r in job.results}
    assert {"calibrated.fits", "sources.vot", "summary.json", "zeropoint.png", "detections.png",
            "fwhm_map.png", "preview.png", "rapas.log", "archive.json"} <= names
    archived = json.loads(client.result(job_url, "archive.json"))
    summary = json.loads(client.result(job_url, "summary.json"))
    assert abs(summary["zero_point"] - service.sky.params["zero_point"]) < 0.01
    # the job read the site configuration (RAPAS_CONFIG): VSX from the archive's TAP, the rest off
    assert {n: e["status"] for n, e in summary["enrichment"].items()} == {
        "simbad": "disabled", "vsx": "ok", "milliquas": "disabled", "skybot": "disabled", "colibri": "disabled"}
    assert summary["enrichment_missing"] == [] and summary["enrichment"]["vsx"]["matched"] == len(VARIABLES)
    # the image is in SIAP2 at once, under its publisher DID
    sia = pyvo.dal.SIA2Service(service.url + "/rapas/q/siap2/siap2.xml", check_baseurl=False)
    found = sia.search(pos=(summary["ra_center"], summary["dec_center"], 0.01)).to_table()
    assert archived["obs_publisher_did"] in list(found["obs_publisher_did"])
    # its sources in TAP, calibrated magnitudes against the simulated truth
    rows = pyvo.dal.TAPService(service.url + "/tap").search(
        "SELECT gaia_source_id, mag_cal FROM rapas.sources WHERE obs_id='%s' AND snr > 30 AND flags = 0"
        " AND gaia_source_id IS NOT NULL" % archived["obs_id"]).to_table()
    truth = dict(zip(service.sky.truth["source_id"].tolist(), service.sky.truth["ref_mag"].tolist()))
    resid = np.array([m - truth[int(i)] for i, m in zip(rows["gaia_source_id"], rows["mag_cal"])])
    assert len(resid) > 50
    assert abs(np.median(resid)) < 0.01 and mad_std(resid) < 0.03
    assert len(rows) <= archived["n_sources"] == summary["n_sources"]
    # the variables are named in the archive, and listed as notable in the field
    tap = pyvo.dal.TAPService(service.url + "/tap")
    named = tap.search("SELECT s.vsx_name, n.kind FROM rapas.sources AS s JOIN rapas.notable AS n"
                       " ON n.source_id = s.source_id WHERE s.obs_id='%s'" % archived["obs_id"]).to_table()
    assert sorted(named["vsx_name"]) == list(VARIABLES) and set(named["kind"]) == {"variable star"}
    # the job's directory was handed over: the archive's image is its file, not a copy,
    # and stays when the job is deleted
    archived_image = service.resdir / "data" / archived["obs_id"] / "calibrated.fits"
    job_image = service.job_directory(job_url) / "calibrated.fits"
    assert archived_image.stat().st_ino == job_image.stat().st_ino
    size = archived_image.stat().st_size
    assert client.session.delete(job_url, allow_redirects=False).status_code == 303
    assert not job_image.exists() and archived_image.stat().st_size == size


def test_enrichment_and_observatory_code_are_job_parameters(service):
    client = alice(service)
    job_url, job = client.submit(exposure(service, 37), enrich="False", observatory_code="C95")
    assert job.phase == "COMPLETED", error_message(job)
    summary = json.loads(client.result(job_url, "summary.json"))
    assert {e["status"] for e in summary["enrichment"].values()} == {"disabled"}
    assert summary["observatory_code"] == "C95" and summary["notable_objects"] == []


def test_a_frame_that_cannot_be_calibrated_is_archived_with_its_wcs_only(service):
    """Every star saturated (the saturation parameter at 450 ADU, sky 300):
    no calibrators, but the WCS refines on the saturated stars.  The job
    COMPLETEs with the reason in its results; the archive holds the image as
    calibration level 1 (ObsCore and SIAP2 show it, with no zero point) and
    its sources with instrumental magnitudes only."""
    client = alice(service)
    job_url, job = client.submit(exposure(service, 40), saturation="450")
    assert job.phase == "COMPLETED", error_message(job)
    archived = json.loads(client.result(job_url, "archive.json"))
    assert archived["calib_level"] == 1 and "no calibrators" in archived["calibration_error"]
    summary = json.loads(client.result(job_url, "summary.json"))
    assert summary["wcs_source"] == "refined" and summary["saturate"] == 450.0
    tap = pyvo.dal.TAPService(service.url + "/tap")
    obs_id = archived["obs_id"]
    image = tap.search(f"SELECT calib_level, zero_point, limiting_mag, calibration_error FROM rapas.images"
                       f" WHERE obs_id='{obs_id}'").to_table()[0]
    assert image["calib_level"] == 1 and np.ma.is_masked(image["zero_point"]) and np.ma.is_masked(image["limiting_mag"])
    assert image["calibration_error"] == archived["calibration_error"]
    obscore = tap.search(f"SELECT calib_level FROM ivoa.obscore WHERE obs_id='{archived['obs_id']}'")
    assert list(obscore.to_table()["calib_level"]) == [1]
    sia = pyvo.dal.SIA2Service(service.url + "/rapas/q/siap2/siap2.xml", check_baseurl=False)
    assert archived["obs_publisher_did"] in list(sia.search(calib=1).to_table()["obs_publisher_did"])
    assert archived["obs_publisher_did"] not in list(sia.search(calib=2).to_table()["obs_publisher_did"])
    counts = tap.search(f"SELECT COUNT(*) AS n, COUNT(mag_cal) AS calibrated, COUNT(mag_inst) AS instrumental"
                        f" FROM rapas.sources WHERE obs_id='{obs_id}'").to_table()[0]
    assert counts["n"] == archived["n_sources"] > 100
    assert counts["calibrated"] == 0 and counts["instrumental"] > 100


def test_a_frame_without_wcs_is_solved_from_the_pointing_and_scale_parameters(service):
    """No WCS in the header, a 15-arcmin field: the job's scale parameter (and
    the header's pointing) let it solve against the reference stars."""
    client = alice(service)
    job_url, job = client.submit(_without_wcs(service), filename="nowcs.fits", scale="1.2")
    assert job.phase == "COMPLETED", error_message(job)
    summary = json.loads(client.result(job_url, "summary.json"))
    assert summary["wcs_source"] == "solved" and summary["astrometric_rms_arcsec"] < 0.3
    assert abs(summary["zero_point"] - service.sky.params["zero_point"]) < 0.02


def test_progress_is_visible_while_the_job_runs(service):
    client = alice(service)
    job_url = client.create(exposure(service, 3))
    client.run(job_url)
    seen_stages = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.job(job_url)
        if job.phase == "EXECUTING" and "rapas.log" in {r.id_ for r in job.results}:
            log = client.result(job_url, "rapas.log").decode()
            seen_stages |= {line.split()[1] for line in log.splitlines() if " started" in line}
        if job.phase in ("COMPLETED", "ERROR"):
            break
        time.sleep(0.2)
    assert job.phase == "COMPLETED"
    assert len(seen_stages) >= 2, seen_stages       # stages advanced while EXECUTING


def _hdul_bytes(*hdus):
    import io
    buffer = io.BytesIO()
    fits.HDUList(list(hdus)).writeto(buffer)
    return buffer.getvalue()


def header_without_wcs(header):
    """``header`` without its WCS keywords."""
    wcs = ("CTYPE", "CRVAL", "CRPIX", "CD", "PC", "CDELT", "CUNIT", "WCSAXES")
    return fits.Header([card for card in header.cards if not card.keyword.startswith(wcs)])


def _without_wcs(service):
    path = exposure(service, 35)
    return _hdul_bytes(fits.PrimaryHDU(fits.getdata(path), header_without_wcs(fits.getheader(path))))


def test_resubmitting_the_same_file_replaces_it(service):
    client = alice(service)
    frame = exposure(service, 4)
    _, first = client.submit(frame)
    assert first.phase == "COMPLETED"
    after_first = counts(service)
    url, second = client.submit(frame)
    assert second.phase == "COMPLETED"
    assert counts(service) == after_first
    obs_id = json.loads(client.result(url, "archive.json"))["obs_id"]
    assert service.sql(f"SELECT count(*) FROM rapas.images WHERE obs_id='{obs_id}'") == [[1]]


#: jobs submitted at once: twice the service's run slots
N_CONCURRENT = 4


def test_concurrent_submissions_all_complete(service):
    """More jobs than run slots, at once (make loadtest submits 50 from three members)."""
    client = alice(service)
    frames = [exposure(service, 100 + i) for i in range(N_CONCURRENT)]
    before_images = counts(service)[0]
    with concurrent.futures.ThreadPoolExecutor(max_workers=N_CONCURRENT) as pool:
        jobs = list(pool.map(lambda f: alice(service).submit(f), frames))
    assert [job.phase for _, job in jobs] == ["COMPLETED"] * N_CONCURRENT
    obs_ids = {json.loads(client.result(url, "archive.json"))["obs_id"] for url, _ in jobs}
    assert len(obs_ids) == N_CONCURRENT
    assert counts(service)[0] == before_images + N_CONCURRENT
    ids = ",".join(f"'{o}'" for o in sorted(obs_ids))
    per_image = service.sql(f"SELECT obs_id, count(*), max(n_sources) FROM rapas.sources"
                            f" JOIN rapas.images USING (obs_id) WHERE obs_id IN ({ids}) GROUP BY obs_id")
    assert len(per_image) == N_CONCURRENT and all(n == n_src for _, n, n_src in per_image)


def _pipeline_pid(job_url):
    job_id = job_url.rstrip("/").rsplit("/", 1)[-1]
    # the frame is the upload under its submitted name (submitted/NAME), or "image"
    found = subprocess.run(["pgrep", "-f", f"rapas-reduce .*/{job_id}/(image|submitted/)"], capture_output=True,
                           text=True)
    pids = [int(p) for p in found.stdout.split()]
    return pids[0] if pids else None


# ---- the database going away under a running job ------------------------------
# The PostgreSQL cluster is shared with other instances, so a restart is
# played by terminating the instance's backends (pg_terminate_backend): the
# job's pooled connections die as they would in a restart.  A table lock held
# by the test pins the job at the step under test first.  DaCHS's server
# answers a few requests with 500 while its own pools shed their dead
# connections, so the client here retries those (DELAYED_500S).
DELAYED_500S = 10

def _psql(service, *statements):
    """Statements run as the database's superuser in one autocommitted psql
    session; the last line they print (the last one's single value)."""
    run = subprocess.run(["psql", "-qtA", "-d", service.dbname, *(arg for s in statements for arg in ("-c", s))],
                         capture_output=True, text=True, check=True)
    lines = run.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def _terminate(service, condition="TRUE"):
    """Terminate the instance's database backends matching ``condition``; how many."""
    return int(_psql(service, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                              f" WHERE datname = current_database() AND pid <> pg_backend_pid() AND {condition}"))


class _TableLock:
    """An exclusive lock on a table, held by a psql session of its own until released."""

    def __init__(self, service, table):
        self.service = service
        self.session = subprocess.Popen(
            ["psql", "-q", "-d", service.dbname, "-c",
             f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120); COMMIT;"],
            env=dict(os.environ, PGAPPNAME="rapas-test-lock"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_for_a_blocked_backend(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if int(_psql(self.service, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                       " AND wait_event_type = 'Lock'")):
                return
            time.sleep(0.2)
        raise TimeoutError("no backend blocked on the lock")

    def release(self):
        _terminate(self.service, "application_name = 'rapas-test-lock'")
        self.session.wait(timeout=30)


def _wait_executing(client, job_url):
    deadline = time.monotonic() + 120
    while _pipeline_pid(job_url) is None and time.monotonic() < deadline:
        time.sleep(0.1)


def _archived_files(service, image_bytes):
    import hashlib
    from processing.contract import obs_id_for
    obs_id = obs_id_for(hashlib.sha256(image_bytes).hexdigest())
    rows = service.sql(f"SELECT count(*) FROM rapas.images WHERE obs_id='{obs_id}'")[0][0]
    return obs_id, rows, (service.resdir / "data" / obs_id).exists()


def test_database_restart_during_the_pipeline_leaves_a_completed_archived_job(service):
    """All connections die while the pipeline runs: the job stores the frame
    with fresh connections and ends COMPLETED with archive.json."""
    client = alice(service)
    frame = simulate_frame(**dict(SKY, shape=(2048, 2048), n_stars=3000), noise_seed=50)
    path = frame.write(service.work / "restart1.fits")
    job_url = client.create(path)
    client.run(job_url)
    _wait_executing(client, job_url)
    assert _terminate(service) >= 1
    job = client.wait(job_url, server_errors=DELAYED_500S)
    assert job.phase == "COMPLETED", error_message(job)
    archived = json.loads(client.result(job_url, "archive.json"))
    obs_id, rows, files = _archived_files(service, path.read_bytes())
    assert (archived["obs_id"], rows, files) == (obs_id, 1, True)


def _kill_backends_during_ingestion(service, seed, where):
    """Alice's job on exposure ``seed`` run until its ingestion waits on a
    lock held on rapas.images; then the backends matching ``where`` are
    terminated and the lock released.  Returns (client, job URL, frame path,
    number of backends terminated)."""
    client = alice(service)
    path = exposure(service, seed)
    job_url = client.create(path)
    client.run(job_url)
    _wait_executing(client, job_url)
    lock = _TableLock(service, "rapas.images")
    try:
        lock.wait_for_a_blocked_backend()                  # the ingestion, waiting to write
        killed = _terminate(service, where)
    finally:
        lock.release()
    return client, job_url, path, killed


def test_database_restart_during_ingestion_rolls_back_with_one_plain_line(service):
    """The ingestion's connection dies in the middle of its transaction:
    nothing is stored, no product directory, ERROR with a plain sentence."""
    before = counts(service)
    client, job_url, path, killed = _kill_backends_during_ingestion(service, 51, "wait_event_type = 'Lock'")
    assert killed == 1
    job = client.wait(job_url, server_errors=DELAYED_500S)
    assert job.phase == "ERROR"
    assert error_message(job).strip() == ("the archive database restarted while the frame was being stored;"
                                          " nothing was stored \u2014 submit it again")
    assert counts(service) == before
    assert _archived_files(service, path.read_bytes())[1:] == (0, False)


def test_database_restart_before_the_final_phase_is_retried_to_completed(service):
    """Every connection but the ingestion's dies while the ingestion waits:
    the frame is stored, the job's pooled connection for its final phase is
    dead, the write is retried, and the job says COMPLETED, as the archive does."""
    client, job_url, path, killed = _kill_backends_during_ingestion(
        service, 52, "wait_event_type IS DISTINCT FROM 'Lock' AND application_name <> 'rapas-test-lock'")
    assert killed >= 1
    job = client.wait(job_url, server_errors=DELAYED_500S)
    assert job.phase == "COMPLETED", error_message(job)
    obs_id, rows, files = _archived_files(service, path.read_bytes())
    assert (rows, files) == (1, True)
    assert json.loads(client.result(job_url, "archive.json"))["obs_id"] == obs_id


def test_killed_pipeline_ends_in_error_and_next_job_succeeds(service):
    client = alice(service)
    before = counts(service)
    big = simulate_frame(**dict(SKY, shape=(2048, 2048), n_stars=3000), noise_seed=5)
    job_url = client.create(big.write(service.work / "slow.fits"))
    client.run(job_url)
    pid = None
    deadline = time.monotonic() + 120
    while pid is None and time.monotonic() < deadline:
        pid = _pipeline_pid(job_url)
        time.sleep(0.1)
    assert pid, "the pipeline process never appeared"
    os.kill(pid, signal.SIGKILL)
    job = client.wait(job_url)
    assert job.phase == "ERROR"
    assert "killed by signal 9" in error_message(job)
    assert counts(service) == before
    _, next_job = client.submit(exposure(service, 6))
    assert next_job.phase == "COMPLETED"


def test_abort_and_execution_duration(service):
    client = alice(service)
    before = counts(service)
    slow = simulate_frame(**dict(SKY, shape=(2048, 2048), n_stars=3000), noise_seed=7).write(
        service.work / "slow2.fits")
    job_url = client.create(slow)
    client.run(job_url)
    deadline = time.monotonic() + 120
    while _pipeline_pid(job_url) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.abort(job_url).status_code == 303
    assert client.wait(job_url).phase == "ABORTED"
    job_url = client.create(slow)
    response = client.session.post(job_url + "/executionduration", data={"EXECUTIONDURATION": "1"},
                                   allow_redirects=False)
    assert response.status_code == 303
    client.run(job_url)
    job = client.wait(job_url)
    assert job.phase == "ERROR" and "executionDuration" in error_message(job)
    assert counts(service) == before


def test_delete_removes_the_job(service):
    client = alice(service)
    job_url = client.create(exposure(service, 8))
    response = client.session.delete(job_url, allow_redirects=False)
    assert response.status_code == 303
    assert client.session.get(job_url).status_code == 404

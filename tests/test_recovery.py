"""Kills, restarts and full disks (#14): an ingestion killed before its
commit publishes nothing, the staging directory is settled by the
transaction's outcome, jobs whose runner died with the server are finished
on recovery (their frame archived, or ERROR with the reason), and a full
disk in the pipeline or the ingestion ends a job with one line and stores
nothing."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pyvo
import requests

from test_reduction_service import _psql, alice, counts, error_message, exposure

pytestmark = pytest.mark.archive

DACHS_PYTHON = "/usr/bin/python3"
INGEST = Path(__file__).resolve().parents[1] / "inputs" / "rapas" / "res" / "ingest.py"


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def _listing(directory):
    return {path.name: path.stat().st_size for path in directory.iterdir()}


@pytest.fixture(scope="module")
def archived_image(service):
    """An image of alice's in the service's archive: its obs_id and product directory."""
    client = alice(service)
    job_url, job = client.submit(exposure(service, 60))
    assert job.phase == "COMPLETED", error_message(job)
    obs_id = json.loads(client.result(job_url, "archive.json"))["obs_id"]
    return obs_id, service.resdir / "data" / obs_id


def test_an_ingestion_killed_before_its_commit_publishes_nothing(service, archived_image, tmp_path):
    obs_id, target = archived_image
    resubmission = shutil.copytree(target, tmp_path / "product")
    (resubmission / "rapas.log").write_text("the resubmission's log\n")
    before, files, inode = counts(service), _listing(target), target.stat().st_ino
    staging = service.resdir / "staging"
    # a session holding rapas.sources stops the ingestion inside its transaction, files staged
    blocker = subprocess.Popen(["psql", "-q", "-d", service.dbname], stdin=subprocess.PIPE, text=True)
    blocker.stdin.write("BEGIN; LOCK TABLE rapas.sources IN EXCLUSIVE MODE;\n")
    blocker.stdin.flush()
    ingestion = subprocess.Popen([DACHS_PYTHON, str(INGEST), str(resubmission)], env=service.env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        staged = _wait_for(lambda: list(staging.glob(f"*/{obs_id}/sources.fits")), 60, "the files were not staged")
        _wait_for(lambda: _psql(service, "SELECT count(*) FROM pg_locks WHERE NOT granted") != "0", 30,
                  "the ingestion did not reach the locked table")
        ingestion.send_signal(signal.SIGKILL)
        ingestion.wait()
    finally:
        blocker.stdin.write("ROLLBACK;\n")
        blocker.stdin.close()
        blocker.wait()
    assert staged, "nothing was staged"
    # nothing of the killed ingestion is visible: rows, files, listing
    assert counts(service) == before
    assert target.stat().st_ino == inode and _listing(target) == files
    log = requests.get(f"{service.url}/rapas/q/files/static/{obs_id}/rapas.log", timeout=30)
    assert log.status_code == 200 and "the resubmission's log" not in log.text
    listing = requests.get(f"{service.url}/rapas/q/files/static/", timeout=30).text
    assert "staging" not in listing and ".old" not in listing and ".new" not in listing
    # the server's recovery pass drops the rolled-back files
    _wait_for(lambda: not any(staging.iterdir()), 40, "the staging directory was not swept")
    assert target.stat().st_ino == inode and _listing(target) == files


def _sweep(service):
    run = subprocess.run([DACHS_PYTHON, str(INGEST), "--sweep"], env=service.env, capture_output=True, text=True,
                         check=True)
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_the_sweep_settles_files_by_their_transactions_outcome(service, archived_image):
    obs_id, target = archived_image
    staging = service.resdir / "staging"
    committed = _psql(service, "SELECT txid_current()")
    rolled_back = _psql(service, "BEGIN", "SELECT txid_current()", "ROLLBACK")
    assert committed and rolled_back and committed != rolled_back
    # (the server's own pass may settle them first: then the command finds nothing)
    # a killed withdrawal: its transaction rolled back, the product directory comes back
    (staging / rolled_back).mkdir()
    target.rename(staging / rolled_back / f"{obs_id}.withdrawn")
    assert _sweep(service) in ([], [{"obs_id": obs_id, "settled": "rolled back"}])
    _wait_for(lambda: (target / "calibrated.fits").is_file() and not (staging / rolled_back).exists(), 10,
              "the withdrawn files did not come back")
    # a killed ingestion whose transaction committed: its files replace the archive's
    staged = shutil.copytree(target, staging / committed / obs_id)
    (staged / "rapas.log").write_text("the committed ingestion's log\n")
    assert _sweep(service) in ([], [{"obs_id": obs_id, "settled": "committed"}])
    _wait_for(lambda: not any(staging.iterdir()), 10, "the committed files were not moved in")
    assert (target / "rapas.log").read_text() == "the committed ingestion's log\n"


def _pipeline_started(service, job_url):
    pid_file = service.job_directory(job_url) / "pipeline.pid"
    return pid_file.is_file() and int(pid_file.read_text())


def _session_alive(session):
    return any(_sid(int(pid)) == session for pid in os.listdir("/proc") if pid.isdigit())


def _sid(pid):
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.parametrize("pipeline_survives", [True, False], ids=["pipeline-survives", "pipeline-killed"])
def test_jobs_whose_runner_died_with_the_server_are_finished_on_restart(service, pipeline_survives):
    client = alice(service)
    job_url = client.create(exposure(service, 61 + pipeline_survives), PHASE="RUN")
    assert isinstance(job_url, str), job_url
    session = _wait_for(lambda: _pipeline_started(service, job_url), 60, "the pipeline did not start")
    service.crash_server()                 # the server and its job runners; the pipeline has its own session
    if not pipeline_survives:
        os.killpg(session, signal.SIGKILL)
    try:
        time.sleep(1)
    finally:
        service.start_server()
    started = time.monotonic()
    job = client.wait(job_url, timeout=180)
    if pipeline_survives:
        assert job.phase == "COMPLETED", error_message(job)
        obs_id = json.loads(client.result(job_url, "archive.json"))["obs_id"]
        tap = pyvo.dal.TAPService(service.url + "/tap")
        assert len(tap.search(f"SELECT obs_id FROM rapas.images WHERE obs_id = '{obs_id}'")) == 1
        assert requests.get(f"{service.url}/rapas/q/files/static/{obs_id}/calibrated.fits",
                            timeout=60).status_code == 200
    else:
        assert job.phase == "ERROR"
        assert error_message(job) == ("the reduction was interrupted when the archive server stopped; nothing"
                                      " was stored — submit the frame again")
        assert time.monotonic() - started < 30, "the dead job held its run slot"
    assert not _session_alive(session)
    print(f"recovered in {time.monotonic() - started:.1f} s", file=sys.stderr)


@contextlib.contextmanager
def small_disk(path, size):
    """A tmpfs of ``size`` (mount's syntax, '3m') mounted on ``path`` for the
    block: a real full disk (root may mount; skipped where it may not)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_the_pipeline_on_a_full_disk_says_so_in_one_line(service, tmp_path):
    frame = exposure(service, 63)
    reduce_command = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "rapas-reduce"
    with small_disk(tmp_path / "disk", "1m") as disk:
        run = subprocess.run([str(reduce_command), str(frame), "--out", str(disk / "out"), "--no-enrich", "--quiet",
                              "--refcat", str(service.work / "refcat.fits")], capture_output=True, text=True)
        left = sorted(p.name for p in (disk / "out").iterdir())
    assert run.returncode == 2, run.stderr[-800:]
    assert run.stderr.strip().splitlines() == [
        "rapas-reduce: out of disk space while writing the products; nothing usable was written"]
    assert "summary.json" not in left and "calibrated.fits" not in left, left


@pytest.mark.parametrize("where, size", [("job", "3m"), ("archive", "1m")])
def test_a_full_disk_ends_the_job_with_one_line_and_stores_nothing(service, where, size):
    client = alice(service)
    before = counts(service)
    disk = service.uws_directory if where == "job" else service.resdir / "staging"
    with small_disk(disk, size):
        job_url, job = client.submit(exposure(service, 64))
        left = list(disk.rglob("*")) if where == "archive" else []
    assert job.phase == "ERROR"
    expected = "the archive is out of disk space; nothing was stored"
    assert error_message(job) in (expected, f"the frame was reduced but could not be archived: {expected}")
    assert counts(service) == before
    assert left == []

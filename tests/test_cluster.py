"""Reductions on a Dask distributed cluster: a real scheduler and two
workers started here (local processes of the pipeline's environment, each
in a session of its own so it can be killed whole), and the reduction
service's UWS jobs handed to them through the site configuration's
``scheduler``."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from dachs_instance import free_port
from conftest import SKY
from processing.simulate import simulate_frame
from test_reduction_service import alice, counts, error_message

pytestmark = pytest.mark.archive

DASK = str(Path(sys.executable).parent / "dask")


class DaskCluster:
    def __init__(self, work):
        self.work, self.port = work, free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes = {}
        self.env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1",
                        RAPAS_CACHE_DIR=str(work / "cache"))
        self._start("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                  "--no-dashboard"], self.env)
        for name in ("w1", "w2"):
            self._start(name, self._worker_command(name), self.env)
        self.workers = self._wait_for_workers(2)

    def _worker_command(self, name):
        return [DASK, "worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                "--local-directory", str(self.work / name)]

    def _start(self, name, command, env):
        log = open(self.work / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)

    def _wait_for_workers(self, n, timeout=60):
        """{worker address: its name} once ``n`` workers have registered."""
        from distributed import Client
        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(n, timeout=timeout)
            return {address: info["name"] for address, info in client.scheduler_info(n_workers=-1)["workers"].items()}

    def kill(self, address):
        """SIGKILL a worker and everything it started (its session)."""
        process = self.processes[self.workers[address]]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def restart(self, address):
        """A new worker of the killed one's name (a new address)."""
        name = self.workers.pop(address)
        self._start(name, self._worker_command(name), self.env)
        self.workers = self._wait_for_workers(2)

    def stop(self):
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


@pytest.fixture(scope="module")
def cluster(service, tmp_path_factory):
    """The cluster, and the service's site configuration naming its
    scheduler (jobs read it when they start); both undone afterwards."""
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    site = service.work / "site.toml"
    original = site.read_text()
    site.write_text(f'scheduler = "{cluster.address}"\n' + original)
    try:
        yield cluster
    finally:
        site.write_text(original)
        cluster.stop()


def exposure(service, noise_seed):
    """A 512x512 exposure of the middle of the service's sky (its stars,
    its reference catalogue; less to reduce than the service's frames)."""
    sim = simulate_frame(**{**SKY, "shape": (512, 512)}, catalogue=service.sky.catalogue, noise_seed=noise_seed)
    return sim.write(service.work / f"small{noise_seed}.fits")


def _log(client, job_url):
    """The job's log so far ('' before its runner has started it)."""
    try:
        return client.result(job_url, "rapas.log").decode()
    except requests.HTTPError:
        return ""


def _worker_of(log):
    match = re.search(r"reduced on Dask worker (\S+)", log)
    return match.group(1) if match else None


#: the cluster's work is the same whatever the photometry: the quick kind
QUICK = dict(psf=False, enrich=False)


def _running_on(client, job_url, stage="detection", timeout=60):
    """The worker reducing a job, once its log says ``stage`` started."""
    deadline, log = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        log = _log(client, job_url)
        if _worker_of(log) and f"stage {stage} started" in log:
            return _worker_of(log)
        time.sleep(0.1)
    raise AssertionError(f"{job_url} did not start on a worker: {log[-500:]}")


def test_a_killed_worker_ends_its_job_in_error_and_ten_jobs_then_run_on_the_workers(service, cluster):
    client = alice(service)
    before = counts(service)
    job_url = client.create(exposure(service, 320), PHASE="RUN", **QUICK)
    worker = _running_on(client, job_url)
    cluster.kill(worker)
    cluster.restart(worker)                 # a new worker takes its place (the next jobs use both)
    job = client.wait(job_url)
    assert job.phase == "ERROR"
    message = error_message(job)
    assert worker in message and "left the cluster" in message and "nothing was stored" in message
    assert "\n" not in message.strip()
    assert counts(service) == before                                 # nothing ingested
    assert "ERROR: the Dask worker" in _log(client, job_url)          # the job page marks the failure
    # the next ten jobs: reduced on the two workers, their logs growing as they run, all archived
    jobs = [client.create(exposure(service, seed), PHASE="RUN", **QUICK) for seed in range(300, 310)]
    sizes = []
    while client.job(jobs[0]).phase not in ("COMPLETED", "ERROR"):
        sizes.append(len(_log(client, jobs[0])))
        time.sleep(0.2)
    assert len(set(sizes) - {0}) >= 3, sizes
    workers, obs_ids = set(), []
    for job_url in jobs:
        job = client.wait(job_url)
        assert job.phase == "COMPLETED", error_message(job)
        log = _log(client, job_url)
        workers.add(_worker_of(log))
        assert "stage products done" in log
        obs_ids.append(json.loads(client.result(job_url, "archive.json"))["obs_id"])
    assert workers == set(cluster.workers) and len(workers) == 2 and worker not in workers
    assert len(set(obs_ids)) == 10 and counts(service)[0] == before[0] + 10
    archived = service.sql("SELECT obs_id, n_sources FROM rapas.images WHERE obs_id IN (%s)"
                           % ",".join(f"'{o}'" for o in obs_ids))
    assert len(archived) == 10 and all(n > 100 for _, n in archived)


def test_rapas_reduce_sends_a_directory_of_frames_to_the_cluster(service, cluster, tmp_path):
    """Bulk re-reduction: a directory's frames, all at once over the
    cluster, one JSON line each (a good frame's zero point, a broken
    one's reason) and the worst exit status."""
    night = tmp_path / "night"
    night.mkdir()
    exposure(service, 330).rename(night / "good.fits")
    (night / "broken.fits").write_bytes(b"SIMPLE  = not really\n" * 200)
    (night / "notes.txt").write_text("not a frame")
    run = subprocess.run([str(Path(sys.executable).parent / "rapas-reduce"), str(night), "--out", str(tmp_path / "out"),
                          "--refcat", str(service.work / "refcat.fits"), "--no-enrich", "--no-psf", "--quiet",
                          "--scheduler", cluster.address], capture_output=True, text=True, timeout=300)
    lines = {Path(entry["image"]).name: entry for entry in map(json.loads, run.stdout.splitlines())}
    assert set(lines) == {"good.fits", "broken.fits"} and run.returncode == 2, run.stderr
    good, broken = lines["good.fits"], lines["broken.fits"]
    assert abs(good["zero_point"] - service.sky.params["zero_point"]) < 0.02 and good["n_sources"] > 100
    assert "not a readable FITS" in broken["error"]
    products = tmp_path / "out" / "good"
    assert (products / "summary.json").is_file() and (products / "sources.fits").is_file()
    assert _worker_of((products / "rapas.log").read_text()) in set(cluster.workers)
    assert json.loads((tmp_path / "out" / "broken" / "error.json").read_text())["stage"] == "load"

"""Load (#14): 50 reductions submitted at once by three members while a
scientist queries TAP.  Every job completes, every frame is archived once
under its member, and the TAP latency during the load is reported.

Not part of ``make test`` (it takes minutes): ``make loadtest``."""
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from test_reduction_service import error_message, exposure
from uws_client import UWSClient

pytestmark = [pytest.mark.archive, pytest.mark.load]

N_JOBS = 50
MEMBERS = (("alice", "s3cret"), ("bob", "b0bb0b"), ("erin", "3r1n"))
#: what a scientist asks while the reductions run (ADQL over sync TAP)
QUERIES = ("SELECT TOP 100 source_id, ra, dec, mag_cal FROM rapas.sources"
           " WHERE 1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 210.0, -12.0, 0.05))",
           "SELECT obs_id, t_min, em_min, s_ra, s_dec FROM ivoa.obscore WHERE obs_collection = 'RAPAS'",
           "SELECT COUNT(*) FROM rapas.images")


def _query_while(service, running, latencies, failures):
    for i in range(10 ** 6):
        if not running.is_set():
            return
        started = time.monotonic()
        answer = requests.post(service.url + "/tap/sync", timeout=120, data={
            "LANG": "ADQL", "REQUEST": "doQuery", "QUERY": QUERIES[i % len(QUERIES)]})
        latencies.append(time.monotonic() - started)
        if answer.status_code != 200 or 'value="ERROR"' in answer.text:
            failures.append(answer.text[-300:])
        time.sleep(0.5)


def test_fifty_jobs_from_three_members_all_archived_once_while_tap_answers(service):
    service.add_user("erin", "3r1n", "rapas")
    clients = [UWSClient(service.jobs_url, auth=member) for member in MEMBERS]
    frames = [exposure(service, 200 + i) for i in range(N_JOBS)]
    before = service.sql("SELECT count(*) FROM rapas.images")[0][0]
    latencies, failures, running = [], [], threading.Event()
    running.set()
    querier = threading.Thread(target=_query_while, args=(service, running, latencies, failures))
    querier.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(8) as pool:
            urls = list(pool.map(lambda i: clients[i % 3].create(frames[i], PHASE="RUN"), range(N_JOBS)))
        assert all(isinstance(url, str) for url in urls), [u for u in urls if not isinstance(u, str)][:1]
        jobs = [clients[i % 3].wait(url, timeout=1800) for i, url in enumerate(urls)]
    finally:
        running.clear()
        querier.join()
    wall = time.monotonic() - started
    assert [job.phase for job in jobs] == ["COMPLETED"] * N_JOBS, \
        [error_message(job) for job in jobs if job.phase != "COMPLETED"][:3]
    archived = [json.loads(clients[i % 3].result(url, "archive.json")) for i, url in enumerate(urls)]
    obs_ids = [a["obs_id"] for a in archived]
    assert len(set(obs_ids)) == N_JOBS                                   # none duplicated
    rows = service.sql("SELECT obs_id, submitted_by, n_sources FROM rapas.images WHERE obs_id IN ({})".format(
        ",".join(f"'{o}'" for o in obs_ids)))
    assert len(rows) == N_JOBS                                           # none lost
    owners = {obs_id: owner for obs_id, owner, _ in rows}
    assert all(owners[obs_ids[i]] == MEMBERS[i % 3][0] for i in range(N_JOBS))
    assert service.sql("SELECT count(*) FROM rapas.images")[0][0] == before + N_JOBS
    sources = service.sql("SELECT obs_id, count(*) FROM rapas.sources WHERE obs_id IN ({}) GROUP BY obs_id".format(
        ",".join(f"'{o}'" for o in obs_ids)))
    assert dict(sources) == {obs_id: n for obs_id, _, n in rows}
    assert not failures, failures[:2]
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"\n{N_JOBS} jobs from {len(MEMBERS)} members in {wall:.0f} s ({N_JOBS / wall * 60:.1f} frames/min);"
          f" TAP during the load: {len(latencies)} queries, median {statistics.median(latencies) * 1000:.0f} ms,"
          f" p95 {p95 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    assert p95 < 5.0

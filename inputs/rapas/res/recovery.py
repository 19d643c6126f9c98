"""What the archive server does after a crash or a kill (DaCHS side).

Started when the server loads the reduction service, it runs at the
server's start and every ``INTERVAL`` seconds, in the server's main
thread (so it only looks and hands work on):

* ``ingest.sweep``: files of ingestions and withdrawals a killed process
  left in the staging directory follow their transaction's outcome;
* reduction jobs that are EXECUTING although their ``dachs uwsrun``
  process has gone (killed with the server, or by the system) are handed
  to a new ``dachs uwsrun``, which finishes them from what the first one
  left (``reducejob``: it waits for a pipeline still running, ingests
  complete products, or ends the job in ERROR with the reason), so a
  reduced frame is archived and the job's run slot freed within seconds.
"""
import os

from gavo import api, base

ingest, _ = api.loadPythonModule("ingest", relativeTo=__file__)
reducejob, _ = api.loadPythonModule("reducejob", relativeTo=__file__)

#: seconds between passes (and the longest a dead job holds a run slot);
#: RAPAS_RECOVERY_INTERVAL in the server's environment overrides it
INTERVAL = float(os.environ.get("RAPAS_RECOVERY_INTERVAL", 15))


def install(service):
    """Run ``recover`` for ``service`` (the reduction service) at once and
    every INTERVAL seconds, in the server only, once per server process
    (the RD, and this module with it, is loaded again when it changes)."""
    if not base.IS_DACHS_SERVER:
        return
    from twisted.internet import reactor
    service_id = service.getFullId()
    # the RD may be loaded in a request's thread; the reactor's calls are for its own thread
    reactor.callFromThread(_start_passes, service_id)


def _start_passes(service_id):
    """A twisted LoopingCall, not DaCHS's scheduler (``base.cron``): in
    ``dachs serve debug`` that stops waking up after its first censored job."""
    from twisted.internet import task
    if getattr(base, "rapasRecoveryPasses", None) is not None:
        return
    base.rapasRecoveryPasses = task.LoopingCall(_pass, service_id)
    base.rapasRecoveryPasses.start(INTERVAL, now=True)


def _pass(service_id):
    """A pass that never raises (a LoopingCall stops at the first exception)."""
    try:
        recover(base.resolveCrossId(service_id))
    except Exception as exc:
        base.ui.notifyError(f"RAPAS recovery pass failed: {type(exc).__name__}: {exc}")


#: (job id, pid) of EXECUTING jobs whose pid did not name the job at the last pass
_SUSPECTS = set()


def recover(service):
    """One pass: settle staged files, resume jobs whose runner died."""
    for obs_id, committed in ingest.sweep():
        base.ui.notifyInfo(f"RAPAS recovery: files of {obs_id} settled ({'committed' if committed else 'rolled back'})")
    executing = _executing_jobs(service)
    for job_id, pid in executing:
        if _runner_gone(job_id, pid):
            _resume(service, job_id, pid)
    _SUSPECTS.intersection_update(executing)


def _runner_gone(job_id, pid):
    """Whether the job's ``dachs uwsrun`` has gone: its process does not
    exist, or it has not named the job on two passes in a row (a pid reused
    since, e.g. after a reboot; a runner seen between its fork and its exec
    still shows its parent's command line, so one pass is not enough)."""
    if pid is None or not os.path.exists(f"/proc/{pid}"):
        return True
    if _names_job(pid, job_id):
        return False
    if (job_id, pid) in _SUSPECTS:
        return True
    _SUSPECTS.add((job_id, pid))
    return False


def _executing_jobs(service):
    """(job id, pid) of the service's EXECUTING jobs."""
    with base.getTableConn() as conn:
        return {tuple(row) for row in conn.query(
            "SELECT jobId, pid FROM uws.userjobs WHERE phase='EXECUTING' AND jobClass=%(c)s",
            {"c": service.getFullId()})}


def _names_job(pid, job_id):
    """Whether process ``pid``'s command line has ``job_id`` as an argument."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return job_id.encode() in f.read().split(b"\0")
    except OSError:
        return False


def _resume(service, job_id, pid):
    """Hand a job whose runner died to a new ``dachs uwsrun`` (DaCHS's own
    command and process protocol, as its queue starts jobs), once: a job
    whose second runner dies too ends in ERROR.  Under the job's row lock,
    and only if it is still EXECUTING under the dead pid (it may have ended
    since the pass looked)."""
    from gavo.protocols import uws
    from twisted.internet import reactor
    worker = service.getUWS()
    with worker.changeableJob(job_id) as job:
        if job.phase != uws.EXECUTING or job.pid != pid:
            return
        marker = os.path.join(job.getWD(), reducejob.RESUMED)
        if os.path.exists(marker):
            job.getTransitionTo(uws.ERROR)(uws.ERROR, job, uws.UWSError(
                "the archive server stopped twice while this frame was being reduced; nothing was stored"
                " — submit it again", job_id))
            worker.scheduleProcessQueueCheck()
            return
        open(marker, "w").close()
        base.ui.notifyInfo(f"RAPAS recovery: job {job_id} lost its runner; resuming it")
        command, args = job._transitions.getCommandLine(job)
        process = reactor.spawnProcess(uws._UWSBackendProtocol(job_id, worker), command, args=args, env=os.environ)
        job.change(pid=process.pid)

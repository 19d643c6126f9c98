"""The DaCHS user-UWS calls the reduction service makes, in one place.

DaCHS 2.7 has no public call for some of what the service does (listing a
result file that is already in the job's directory, creating a job from a
browser form's fields, starting queued jobs when a job ends), so those use
DaCHS internals; if a DaCHS release changes them, this is the file to adapt.
"""
from pathlib import Path


class Job:
    """A running reduction job (DaCHS's ``UWSJobWithWD``)."""

    def __init__(self, job):
        self._job = job

    @property
    def wd(self):
        """The job's working directory: the upload, then the products."""
        return Path(self._job.getWD())

    @property
    def execution_duration(self):
        """Seconds the job may run, or None for no limit."""
        return self._job.executionDuration or None

    def list_result(self, name, media_type):
        """List a file the pipeline wrote into the working directory as a
        result (``addResult`` would copy it onto itself)."""
        self._job._addResultInJobDir(media_type, name)

    def write_result(self, name, media_type, data):
        """Write ``data`` (bytes) as a new result."""
        with self._job.openResult(media_type, name) as f:
            f.write(data)

    def set_aborted(self):
        from gavo.protocols import uws
        with self._job.getWritable() as writable:
            writable.change(phase=uws.ABORTED)


def queue_job(service, params, user):
    """A new job of ``service`` with ``params`` (the upload as (name, file)),
    owned by ``user`` and queued; returns its URL."""
    from gavo.protocols import uws
    worker = service.getUWS()
    job_id = worker.getNewIdFromArgs({}, params, user=user)
    worker.changeToPhase(job_id, uws.QUEUED)
    return worker.getURLForId(job_id)


def start_queued_jobs(service):
    """Let DaCHS start queued jobs now.

    A user-UWS job leaves EXECUTING in its own uwsrun process, which the
    server notices only on its 60-second queue pass.  Called (atexit) after
    uwsrun has set COMPLETED or ERROR; outside the server's reactor DaCHS
    starts the next job by fork and exec.
    """
    try:
        worker = service.getUWS()
        worker.scheduleProcessQueueCheck()
        worker.checkProcessQueue()
    except Exception:          # the server's own queue pass will do it
        pass

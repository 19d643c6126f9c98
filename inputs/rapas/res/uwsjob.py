"""The DaCHS user-UWS calls the reduction service makes, in one place.

DaCHS 2.7 has no public call for some of what the service does (listing a
result file that is already in the job's directory, creating a job from a
browser form's fields, starting queued jobs when a job ends), so those use
DaCHS internals; if a DaCHS release changes them, this is the file to adapt.

The job writes its own final phase (``finish``), retried while the
database restarts, instead of leaving it to ``dachs uwsrun``: a phase write
on a connection that died with a restart would otherwise turn a frame the
archive holds into a job in ERROR.
"""
import os
import re
from pathlib import Path

from gavo import api

database, _ = api.loadPythonModule("database", relativeTo=__file__)

#: DaCHS stores a job's upload as the file "image" in its directory; the
#: name it was submitted with is kept beside it, in this file
UPLOAD_NAME = "image.name"
#: a submitted file name the archive keeps: a plain name, no path, no dot first
_PLAIN_NAME = re.compile(r"[\w+\-()][\w.+\-() ]{0,119}")


def keep_upload_name(wd, client_name):
    """Remember the name the frame was submitted with, if it is a plain file name."""
    name = os.path.basename(str(client_name or "")).strip()
    if _PLAIN_NAME.fullmatch(name):
        (Path(wd) / UPLOAD_NAME).write_text(name)


def submitted_frame(wd):
    """The upload under the name it was submitted with (a hard link in
    ``submitted/``), so that the pipeline's products and the archive
    record that name (``source_file``, RP_SRC); the upload itself when no
    name was kept."""
    wd = Path(wd)
    try:
        name = (wd / UPLOAD_NAME).read_text()
    except OSError:
        return wd / "image"
    frame = wd / "submitted" / name
    if not frame.exists():
        frame.parent.mkdir(exist_ok=True)
        os.link(wd / "image", frame)
    return frame


class Job:
    """A running reduction job (DaCHS's ``UWSJobWithWD``) of ``service``."""

    def __init__(self, job, service):
        self._job, self._service = job, service

    @property
    def wd(self):
        """The job's working directory: the upload, then the products."""
        return Path(self._job.getWD())

    @property
    def owner(self):
        """The member who submitted the job (None for an anonymous job)."""
        return self._job.owner

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

    def finish(self, phase, error=None):
        """Move the job to its final phase (COMPLETED, ERROR with ``error``'s
        text as errorSummary, or ABORTED) and set its end time (DaCHS 2.7's
        user UWS leaves endTime empty), retried while the database
        restarts, then end ``dachs uwsrun`` so that it writes nothing after
        it (SystemExit is how uwsrun ends a job quietly)."""
        import datetime
        from gavo.protocols import uws

        def write():
            if phase == uws.ERROR:
                self._service.getUWS().changeToPhase(self._job.jobId, uws.ERROR, error)
            with self._job.getWritable() as writable:
                writable.change(phase=phase, endTime=datetime.datetime.utcnow())

        database.retrying(write)
        raise SystemExit(0)


def queue_job(service, params, user):
    """A new job of ``service`` with ``params`` (the upload as (name, file)),
    owned by ``user`` and queued; returns its id."""
    from gavo.protocols import uws
    worker = service.getUWS()
    job_id = worker.getNewIdFromArgs({}, params, user=user)
    worker.changeToPhase(job_id, uws.QUEUED)
    return job_id


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

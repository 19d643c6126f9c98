"""The reduction service's UWS: DaCHS 2.7's user UWS, with what standard
UWS 1.1 clients trip on put right (DaCHS side).

DaCHS 2.7's user UWS (``gavo.protocols.useruws``) deviates from UWS 1.1 in
ways that break real clients; this module keeps DaCHS's implementation and
overrides only those, through the hooks DaCHS offers (a core's
``workerSystem``, extra ``JobActions`` replacing standard ones, the job
class).  The reduction core (``reducecore.Core``) attaches it.  Each fix is
one class or function below:

- ``ReductionJob.setPar``: the name of the uploaded file is kept
  (``uwsjob.keep_upload_name``): DaCHS stored every frame as "image", and
  the archive recorded "image" as each frame's submitted file name.
- ``ReductionJob.setParamsFromRawDict``: a POST to ``{job}/parameters``
  sets only the parameters it names (DaCHS resets every other one to None,
  so a boolean set to False became its default, True, again).
- ``ReductionUWS.getNewIdFromRequest``: ``PHASE=RUN`` in the creation POST
  starts the job (DaCHS ignored it; astroquery-style clients then wait on a
  PENDING job forever); an upload by URL is refused at creation with one
  line (DaCHS fetched the URL, then failed to pickle the open stream).
- ``JobDocument``, ``Parameters``: job and parameter documents valid against the UWS 1.1 schema
  (``byReference="true"``, not Python's ``True``), results with their
  ``size`` and ``mime-type``.
- ``Results``: a missing result is HTTP 404 (DaCHS answered 200 with a
  VOTable saying "File not found").
- ``ReductionUWS.getURLForId``: jobs are addressed under ``async``, the URL
  job creation redirects to (DaCHS's job list pointed at ``uws.xml``).
- ``out_of_range``: a numeric parameter outside the range the RD declares
  (``<values min max>``), or not a finite number, is refused at creation
  and on ``{job}/parameters`` with one line (DaCHS's UWS accepted it).
- ``Actions.dispatch``: another member's job answers 404, as a missing one
  does (DaCHS answered 401, which told that it exists).
- ``JobDocument``: a browser opening a job's URL gets the job's HTML page
  (``wants_a_page``), not the XML styled by XSLT, which Chromium is dropping;
  the job list's is ``ReductionUWS.job_list_page_for`` (``sitehooks``).

A job's end time is written by the job itself (``uwsjob.Job.finish``); the
hooks DaCHS has no per-service place for (uploads by URL, capabilities,
content types, cross-site requests) are in ``sitehooks``.
If a DaCHS release fixes one of these, its override here can go.
"""
import io
import math
import os
import urllib.parse

from twisted.web import server

from gavo import api, base, svcs, utils
from gavo.protocols import useruws, uws, uwsactions
from gavo.utils import stanxml

uwsjob, _ = api.loadPythonModule("uwsjob", relativeTo=__file__)

UWS = uwsactions.UWS

#: the one line an upload by URL is refused with
URL_UPLOAD_REFUSED = ("upload by URL is not supported: send the FITS file itself"
                      " (UPLOAD=image,param:img with the file in the form field img)")


def out_of_range(input_keys, parameters):
    """The line refusing the first numeric parameter that is not a finite
    number inside the range its input key declares; None if all are."""
    for key in input_keys:
        value = parameters.get(key.name.lower())
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            return f"{key.name}={value} is not a number"
        low, high = (key.values.min, key.values.max) if key.values else (None, None)
        if (low is not None and value < float(low)) or (high is not None and value > float(high)):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            unit = f" {key.unit}" if key.unit else ""
            return f"{key.name}={value:g} is out of range: it must be {bounds}{unit}"
    return None


#: the boolean literals DaCHS reads (base.literals.parseBooleanLiteral)
BOOLEAN_LITERALS = {"true", "yes", "t", "on", "enabled", "1", "false", "no", "f", "off", "disabled", "0"}


def not_a_boolean(input_keys, strargs):
    """The line refusing the first boolean parameter of the request
    (``strargs``: name -> list of strings) that is no boolean literal;
    None if there is none (DaCHS answered psf=maybe with just "'maybe'")."""
    given = {name.lower(): values for name, values in strargs.items()}
    for key in input_keys:
        if key.type != "boolean":
            continue
        for value in given.get(key.name.lower()) or []:
            if isinstance(value, str) and value.strip().lower() not in BOOLEAN_LITERALS:
                return f"{key.name}={value[:40]!r} is neither true nor false: give True or False"
    return None


class ReductionJob(useruws.UserUWSJobBase):
    """A reduction job; its service is set by ``ReductionUWS``."""

    def setPar(self, parName, parValue):
        """DaCHS's, keeping the upload's file name (DaCHS stores the file as
        "image"): the products and the archive record the name submitted."""
        if parName.lower() == "image" and isinstance(parValue, tuple) and len(parValue) == 2 \
                and isinstance(parValue[1], io.BytesIO):
            uwsjob.keep_upload_name(self.getWD(), parValue[0])
        super().setPar(parName, parValue)

    def setParamsFromRawDict(self, strargs):
        """Set the parameters a request names, and only those, if in range."""
        _refuse_bad_booleans(self.uws.service, strargs)
        named = {key.lower() for key in strargs}
        parsed = self.uws.parameterGrammar.parseStrargs(strargs, ensureRequired=False)
        given = {key: value for key, value in parsed.items() if key.lower() in named}
        _refuse_out_of_range(self.uws.service, given)
        self.setParamsFromDict(given)


def _refuse_url_upload(request):
    """Refuse a request whose upload by URL ``sitehooks`` set aside."""
    if getattr(request, "rapas_url_upload", None):
        raise base.ValidationError(URL_UPLOAD_REFUSED, "UPLOAD")


def _refuse_bad_booleans(service, strargs):
    refusal = not_a_boolean(service.core.inputTable.inputKeys, strargs)
    if refusal:
        raise base.ValidationError(refusal, refusal.split("=", 1)[0])


def _refuse_out_of_range(service, parameters):
    refusal = out_of_range(service.core.inputTable.inputKeys, parameters)
    if refusal:
        raise base.ValidationError(refusal, refusal.split("=", 1)[0])


class ReductionUWS(useruws.UserUWS):
    """The user UWS of one service, with the job document, results and
    creation behaviour of UWS 1.1."""

    def __init__(self, service):
        job_class = type("ReductionJob", (ReductionJob,), {
            "_default_jobClass": classmethod(lambda _, v=service.getFullId(): v)})
        self.runcountGoal = base.getConfig("async", "maxUserUWSRunningDefault")
        self.service = service
        uws.UWSWithQueueing.__init__(self, job_class, Actions(JobDocument, Parameters, Results))
        self.parameterGrammar = base.makeStruct(svcs.ContextGrammar, inputTD=service.core.inputTable)

    def getURLForId(self, jobId):
        return self.service.getURL("async") + "/" + jobId

    def job_page(self, job_id):
        """The job's HTML page (``res/web/job.html``, served by the service
        itself, behind its login)."""
        return f"{self.service.getURL('static')}/job.html?job={urllib.parse.quote(job_id)}"

    def job_list_page_for(self, request):
        """Where ``request`` for the job list goes instead (``sitehooks``): a
        browser's page load to the member's jobs as an HTML page
        (``res/web/jobs.html``); None for everyone else."""
        return self.service.getURL("static") + "/jobs.html" if wants_a_page(request) else None

    def getNewIdFromArgs(self, uwsArgs, paramDict, user=None):
        _refuse_out_of_range(self.service, paramDict)
        return super().getNewIdFromArgs(uwsArgs, paramDict, user)

    def getNewIdFromRequest(self, request):
        _refuse_url_upload(request)
        _refuse_bad_booleans(self.service, request.strargs)
        job_id = super().getNewIdFromRequest(request)
        if (request.uwsArgs.get("phase") or "").upper() == "RUN":
            self.changeToPhase(job_id, uws.QUEUED)
        return job_id


class Actions(uwsactions.JobActions):
    """DaCHS's job actions; another member's job is not found."""

    def dispatch(self, action, job, request, segments):
        user = request.getAuthUser()
        if job.owner and user and user != job.owner:
            raise uws.JobNotFound(job.jobId)
        return super().dispatch(action, job, request, segments)


def _result_element(job, result):
    """A uws:result with the size and media type UWS 1.1 allows."""
    element = _Result(id=result["resultName"], href=job.getURL() + "/results/" + result["resultName"],
                      mime_type=result["resultType"])
    try:
        element(size=str(os.path.getsize(os.path.join(job.getWD(), result["resultName"]))))
    except OSError:
        pass
    return element


class _Result(UWS.result):
    name_ = "result"
    _a_size = None
    _a_mime_type = None
    _name_a_mime_type = "mime-type"


def _parameters_element(job):
    """uws:parameters with ``byReference="true"`` for the upload."""
    parameters = UWS.parameters()
    for key, value in job.iterSerializedPars():
        if isinstance(value, uws.ParameterRef):
            parameters[UWS.parameter(id=key, byReference="true")[value.url]]
        else:
            parameters[UWS.parameter(id=key)[str(value)]]
    return parameters


class Parameters(uwsactions.ParameterAction):
    """``{job}/parameters``: schema-valid; a POST naming an upload by URL is refused."""

    def doGET(self, job, request):
        request.setHeader("content-type", "text/xml")
        return UWS.makeRoot(_parameters_element(job))

    def doPOST(self, job, request):
        _refuse_url_upload(request)
        return super().doPOST(job, request)


def wants_a_page(request):
    """Whether the request is a browser's page load: its Accept header
    names text/html first (browsers do; UWS clients, curl and the pages'
    own scripts ask for anything)."""
    accept = (request.getHeader("accept") or "").split(",")[0].split(";")[0].strip()
    return accept == "text/html"


class JobDocument(uwsactions.RootAction):
    """``GET {job}``: DaCHS's job document, schema-valid; a browser loading
    it is sent to the job's HTML page (``res/web/job.html``), not to DaCHS's
    XSLT rendering of the XML."""

    def doGET(self, job, request):
        if wants_a_page(request):
            raise svcs.SeeOther(job.uws.job_page(job.jobId))
        delay = self._delayIfWAIT(job, request)
        if delay:
            return delay
        request.setHeader("content-type", "text/xml")
        tree = UWS.makeRoot(UWS.job[
            UWS.jobId[job.jobId],
            UWS.runId[job.runId],
            UWS.ownerId[job.owner],
            UWS.phase[job.phase],
            UWS.quote[utils.formatISODT(job.quote)],
            UWS.creationTime[utils.formatISODT(job.creationTime)],
            uwsactions._serializeTime(UWS.startTime, job.startTime),
            uwsactions._serializeTime(UWS.endTime, job.endTime),
            UWS.executionDuration[str(job.executionDuration)],
            UWS.destruction[utils.formatISODT(job.destructionTime)],
            _parameters_element(job),
            UWS.results[[_result_element(job, result) for result in job.getResults()]],
            uwsactions.getErrorSummary(job)])
        return stanxml.xmlrender(tree, job.uws.jobdocPreamble)


class Results(uwsactions.ResultsAction):
    """``{job}/results[/NAME]``: a result that does not exist is a 404."""

    def getResource(self, job, request, segments):
        if segments and not os.path.isfile(os.path.join(job.getWD(), *segments)):
            request.setResponseCode(404)
            request.setHeader("content-type", "text/plain; charset=utf-8")
            request.write(f"job {job.jobId} has no result {'/'.join(segments)} (phase {job.phase})\n".encode())
            request.finish()
            return server.NOT_DONE_YET
        return super().getResource(job, request, segments)

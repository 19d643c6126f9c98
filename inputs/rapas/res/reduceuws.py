"""The reduction service's UWS: DaCHS 2.7's user UWS, with what standard
UWS 1.1 clients trip on put right (DaCHS side).

DaCHS 2.7's user UWS (``gavo.protocols.useruws``) deviates from UWS 1.1 in
ways that break real clients; this module keeps DaCHS's implementation and
overrides only those, through the hooks DaCHS offers (a core's
``workerSystem``, extra ``JobActions`` replacing standard ones, the job
class).  The reduction core (``reducecore.Core``) attaches it.  Each fix is
one class or function below:

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
- ``install``: ``.log`` files (the reduction log) are served as
  ``text/plain; charset=utf-8``, not ``text/html``.
- ``_capabilities_tree``: the service's VOSI capabilities declare the
  ``vs`` namespace their interfaces use (DaCHS left it out when nothing
  else declared it: schema-invalid) and advertise the UWS job list.

A job's end time is written by the job itself (``uwsjob.Job.finish``).
If a DaCHS release fixes one of these, its override here can go.
"""
import os

from twisted.web import server, static

from gavo import base, svcs, utils
from gavo.protocols import dali, useruws, uws, uwsactions
from gavo.registry.model import VOR, VS
from gavo.utils import stanxml
from gavo.web import vosi

UWS = uwsactions.UWS

#: the one line an upload by URL is refused with
URL_UPLOAD_REFUSED = ("upload by URL is not supported: send the FITS file itself"
                      " (UPLOAD=image,param:img with the file in the form field img)")


class ReductionJob(useruws.UserUWSJobBase):
    """A reduction job; its service is set by ``ReductionUWS``."""

    def setParamsFromRawDict(self, strargs):
        """Set the parameters a request names, and only those."""
        named = {key.lower() for key in strargs}
        parsed = self.uws.parameterGrammar.parseStrargs(strargs, ensureRequired=False)
        self.setParamsFromDict({key: value for key, value in parsed.items() if key.lower() in named})


class ReductionUWS(useruws.UserUWS):
    """The user UWS of one service, with the job document, results and
    creation behaviour of UWS 1.1."""

    def __init__(self, service):
        job_class = type("ReductionJob", (ReductionJob,), {
            "_default_jobClass": classmethod(lambda _, v=service.getFullId(): v)})
        self.runcountGoal = base.getConfig("async", "maxUserUWSRunningDefault")
        self.service = service
        uws.UWSWithQueueing.__init__(self, job_class, uwsactions.JobActions(JobDocument, Parameters, Results))
        self.parameterGrammar = base.makeStruct(svcs.ContextGrammar, inputTD=service.core.inputTable)

    def getURLForId(self, jobId):
        return self.service.getURL("async") + "/" + jobId

    def getNewIdFromRequest(self, request):
        if getattr(request, "rapas_url_upload", None):
            raise base.ValidationError(URL_UPLOAD_REFUSED, "UPLOAD")
        job_id = super().getNewIdFromRequest(request)
        if (request.uwsArgs.get("phase") or "").upper() == "RUN":
            self.changeToPhase(job_id, uws.QUEUED)
        return job_id


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
        if getattr(request, "rapas_url_upload", None):
            raise base.ValidationError(URL_UPLOAD_REFUSED, "UPLOAD")
        return super().doPOST(job, request)


class JobDocument(uwsactions.RootAction):
    """``GET {job}``: DaCHS's job document, schema-valid."""

    def doGET(self, job, request):
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


# ---- DaCHS-wide hooks, applied once per server process ------------------
# (their state lives on the installed functions: DaCHS may load this module
# again when the RD changes, and the hooks must not stack)

def _mangle_uploads(request, _dachs=dali.mangleUploads):
    """DaCHS's DALI upload handling, except that the services registered in
    ``_mangle_uploads.file_only`` do not fetch uploads by URL: they are
    set aside for the job creation to refuse."""
    path = request.path.decode("utf-8", "replace")
    if any(path.startswith(prefix) for prefix in dali.mangleUploads.file_only):
        specs = request.strargs.get("UPLOAD", [])
        by_url = [spec for spec in specs if not dali.parseUploadString(spec)[1].startswith("param:")]
        if by_url:
            request.rapas_url_upload = by_url
            request.strargs["UPLOAD"] = [spec for spec in specs if spec not in by_url]
    return _dachs(request)


def _uws_capability(service):
    """A capability for the service's UWS 1.1 job list (no registered
    standard identifier exists for a generic UWS)."""
    return VOR.capability[
        VOR.description["IVOA UWS 1.1 job list of this service: POST the parameters (the image as a DALI upload)"
                        " to create a job; PHASE=RUN starts it"],
        VS.ParamHTTP[VOR.accessURL(use="base")[service.getURL("async")]]]


def _capabilities_tree(self, request, _dachs=vosi.VOSICapabilityRenderer._getTree):
    """DaCHS's VOSI capabilities, with the namespaces their interfaces use,
    and the UWS job list of services whose core says ``advertises_uws``."""
    root = _dachs(self, request)
    root._additionalPrefixes = frozenset(root._additionalPrefixes) | {"vs", "xsi"}
    if getattr(getattr(self.service, "core", None), "advertises_uws", False):
        root[_uws_capability(self.service)]
    return root


def install(service):
    """Apply the hooks (once) and make ``service`` refuse uploads by URL.

    The archive's text products (``rapas.log``, which quotes header values
    observers submitted) are served as ``text/plain; charset=utf-8``, as
    DaCHS serves its own known extensions: twisted knew no ``.log`` and
    DaCHS's static renderer then said ``text/html``.
    """
    static.File.contentTypes[".log"] = "text/plain; charset=utf-8"
    if not hasattr(dali.mangleUploads, "file_only"):
        _mangle_uploads.file_only = set()
        dali.mangleUploads = _mangle_uploads
    if getattr(vosi.VOSICapabilityRenderer._getTree, "__name__", "") != "_capabilities_tree":
        vosi.VOSICapabilityRenderer._getTree = _capabilities_tree
    dali.mangleUploads.file_only.add("/" + service.rd.sourceId + "/" + service.id + "/")

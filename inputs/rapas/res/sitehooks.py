"""What DaCHS 2.7 offers no per-service place for, applied once per server
process when the archive's RD loads (DaCHS side).

- ``_mangle_uploads``: the reduction service refuses an upload by URL at
  job creation (``reduceuws``) instead of DaCHS fetching the URL for any
  member (a probe of the server's network) before any job exists.
- ``_capabilities_tree``: VOSI capabilities declare the ``vs`` namespace
  their interfaces use (DaCHS left it out when nothing else declared it:
  schema-invalid) and name the UWS job list of a core that says
  ``advertises_uws``.
- ``_archive_child``, for every request:
  - a state-changing request (POST, PUT, DELETE) that a browser sends from
    another site with a member's credentials is refused (403): a page
    elsewhere cannot queue jobs or edit targets in the member's name (CSRF);
  - the archive's answers carry ``X-Content-Type-Options: nosniff``;
  - ``/login?nextURL=`` leads only to this server's pages.
- ``_tap_query_within_its_time``: a TAP query stops at its time limit
  (``[async]defaultExecTimeSync`` for sync, the job's executionDuration
  otherwise) however long it streams: DaCHS's PostgreSQL
  ``statement_timeout`` bounds each statement, and a large result is
  fetched in many statements (a sync cross-join ran 13 minutes past 60 s).
- ``_capped_execution_duration``: a UWS job's executionDuration can be
  shortened, not raised beyond ``[async]defaultExecTime`` (UWS lets the
  service choose the value it accepts).
- ``_request_body_refusal``: a request with a body to a members-only
  service (``limitTo``) that carries no credentials is answered 401 as soon
  as its headers are in, and one whose declared length is over the upload
  limit 413: their bodies are never read (an anonymous 260 MB chunked
  upload grew the server by 0.6 GB).  ``_requests_within_the_limit``: a
  chunked upload over the limit is answered 413 (DaCHS read chunked bodies
  past its limiter and archived them truncated).
- ``customwidgets.Interval.processInput``'s defaults are bytes, as the
  values it decodes: a form request that leaves out an interval field
  (``/rapas/q/siap2/form?POS=abc``, as curl or a bookmark sends it) was an
  HTTP 500 ("'str' object has no attribute 'decode'") instead of the form
  with its field errors.
- ``_throttled_credentials``: after ``LOGIN_FAILURES`` wrong passwords for
  one user name within ``LOGIN_WINDOW`` seconds, that name's logins are
  refused for ``LOGIN_LOCKOUT`` seconds without looking at the password
  (guessing went at about 60 passwords a second).  DaCHS checks
  credentials without the request, so the count is per name, not per
  client: a member being guessed at waits out the lockout too.
- UWS job rows are waited for up to ``JOBS_TABLE_WAIT`` seconds, not
  DaCHS's 0.1 s: under load a job's own writes (its results, its end)
  failed with "Could not access the jobs table ... stale lock" (one job in
  about 75).  The hooks are installed in the job runners too (they load
  the RD).
- DaCHS's ``/static/js/jquery-gavo.js``, which it assembles from Debian's
  jQuery UI files, leaves out the files Debian 12's ``libjs-jquery-ui``
  (1.13) no longer has (``ui/jquery-1-7.js``, a shim for jQuery 1.7): it
  answered HTTP 500, and every page's scripts then failed on ``$``.
- ``_job_list_for_browsers``: a browser loading the job list of a UWS that
  has a ``job_list_page_for`` (the reduction service's) goes to that HTML
  page instead of the XML styled by XSLT; clients get the XML as before.
- ``_head_for_every_screen``: every page DaCHS renders declares a
  viewport (phones showed the desktop layout shrunk: a results page was
  4,413 px wide) and the site's icon (``[web]favicon``; it was a 404 in
  every console).  The layouts for narrow windows are in
  ``[web]operatorCSS`` (``res/web/rapas.css``).
- ``_radio_default_checked``: a choice of three or fewer options (plate
  solving, the Bayer colour plane) shows its default ticked.  DaCHS makes
  the default the radio group's "none" option, which formal ticks only
  for no value, while the form fills in the default: nothing was ticked.
- ``.log`` files (the reduction log, which quotes header values observers
  submitted) are served as ``text/plain; charset=utf-8``, as DaCHS serves
  its other known extensions (twisted knew no ``.log``, and DaCHS's static
  renderer said ``text/html``).

Their state lives on the installed functions: DaCHS loads this module again
when the RD changes, and the hooks must not stack.
"""
import math
import os
import threading
import time
from urllib.parse import urlsplit

from twisted.web import resource, static
from twisted.web.template import tags as T

from gavo import base, svcs
from gavo.formal import iformal
from gavo.formal import widget as formalwidget
from gavo.protocols import creds, dali, taprunner, uws, uwsactions
from gavo.svcs import customwidgets
from gavo.registry.model import VOR, VS
from gavo.web import asyncrender, common, ifpages, root, vosi

#: the one line a cross-site request is refused with
CROSS_SITE_REFUSED = ("cross-site request refused: this request came from a page on another site, not from"
                      " this archive; submit from the archive's own pages or a VO client\n")


class _Refusal(resource.Resource):
    """A 403 in plain text."""
    isLeaf = True

    def render(self, request):
        request.setResponseCode(403)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return CROSS_SITE_REFUSED.encode()


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
    capabilities = _dachs(self, request)
    capabilities._additionalPrefixes = frozenset(capabilities._additionalPrefixes) | {"vs", "xsi"}
    if getattr(getattr(self.service, "core", None), "advertises_uws", False):
        capabilities[_uws_capability(self.service)]
    return capabilities


def _own_origins(request):
    """The origins this archive is reached at: its serverURL's, and the
    one the request was addressed to."""
    server = urlsplit(base.getConfig("web", "serverURL"))
    host = (request.getHeader("host") or "").lower()
    return {f"{server.scheme}://{server.netloc}".lower(), f"http://{host}", f"https://{host}"}


def cross_site_refusal(request):
    """The refusal of a state-changing request a browser sent from another
    site with credentials (an Origin that is not the archive's, and an
    Authorization header); None for any other request (GETs, VO clients,
    which send no Origin, anonymous cross-origin TAP)."""
    if request.method in (b"GET", b"HEAD", b"OPTIONS"):
        return None
    origin = request.getHeader("origin")
    if origin is None or request.getHeader("authorization") is None:
        return None
    if origin.rstrip("/").lower() in _own_origins(request):
        return None
    return _Refusal()


def is_local_path(url):
    """True for a path on this server ('/rapas/q/...'), False for anything
    a browser would take to another site ('http://...', '//host', '/\\host')."""
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and url.startswith("/") and url[1:2] not in ("/", "\\")


def keep_login_redirect_local(request):
    """DaCHS's /login sends the browser to any ``nextURL`` (an open
    redirect: a link to the archive that lands on another site); a
    ``nextURL`` off this server becomes the home page."""
    next_url = request.args.get(b"nextURL") if request.path.rstrip(b"/") == b"/login" else None
    if next_url and not is_local_path(next_url[0].decode("utf-8", "replace")):
        request.args[b"nextURL"] = [b"/"]


def _archive_child(self, name, request, _dachs=root.ArchiveService.getChild):
    """DaCHS's root traversal, behind the CSRF check, with nosniff and
    login redirects kept on this server."""
    request.setHeader(b"x-content-type-options", b"nosniff")
    keep_login_redirect_local(request)
    return cross_site_refusal(request) or _dachs(self, name, request)


def _cancel_after(connection, seconds):
    """Cancel what runs on ``connection`` (psycopg2's thread-safe
    ``cancel``) from ``seconds`` on, until the query's table closes it (a
    cancel between two fetches is lost, so it is repeated, for a minute at
    most)."""
    time.sleep(seconds)
    for _ in range(300):
        if connection.closed:
            return
        connection.cancel()
        time.sleep(0.2)


def _tap_query_within_its_time(parameters, job, queryProfile, timeout, _dachs=taprunner.getQTableFromJob):
    """DaCHS's TAP query table, its query cancelled in the database at
    ``timeout`` seconds from its start, its result's streaming included
    (the table's connection is the job's own, closed when it is read)."""
    started = time.monotonic()
    table = _dachs(parameters, job, queryProfile, timeout)
    if timeout and table.connection is not None:
        remaining = max(0.0, float(timeout) - (time.monotonic() - started))
        threading.Thread(target=_cancel_after, args=(table.connection, remaining), daemon=True,
                         name="TAP time limit").start()
    return table


def _capped_execution_duration(literal):
    """A requested executionDuration (s) as accepted: at most
    ``[async]defaultExecTime``, which also stands in for 0 (unlimited) and
    for what is not a positive number."""
    ceiling = float(base.getConfig("async", "defaultExecTime"))
    value = float(literal)
    return value if math.isfinite(value) and 0 < value <= ceiling else ceiling


def _answer_before_the_body(request, status, reason, text, headers=()):
    """Answer ``request`` now, from its headers, and close the connection
    without reading its body (twisted reads none after ``loseConnection``;
    a client that asked ``Expect: 100-continue`` sends none)."""
    body = text.encode("utf-8")
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}", "Connection: close", "X-Content-Type-Options: nosniff", *headers]
    request.requestHeaders.removeHeader(b"expect")
    request.channel.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    request.channel.loseConnection()
    request.rapas_answered = True


def _over_the_limit(limit):
    return f"the upload is over this archive's limit of {limit} bytes; nothing was stored\n"


def _request_body_refusal(request, length):
    """(status, reason, text, headers) for a request whose body is not to
    be read, or None."""
    path = getattr(request.channel, "_path", b"").split(b"?")[0].decode("utf-8", "replace")
    limit = base.getConfig("web", "maxUploadSize")
    if length is not None and length > limit:
        return 413, "Request Entity Too Large", _over_the_limit(limit), ()
    members_only = any(path.startswith(prefix) for prefix in _members_only_paths())
    has_body = length is None and request.requestHeaders.hasHeader(b"transfer-encoding") or bool(length)
    if members_only and has_body and not request.requestHeaders.hasHeader(b"authorization"):
        realm = base.getConfig("web", "realm")
        return (401, "Unauthorized", "this service is for members of the network: log in (HTTP basic"
                " authentication) and send the request again\n", (f'WWW-Authenticate: Basic realm="{realm}"',))
    return None


def _members_only_paths():
    """Path prefixes of the services limited to a group (``limitTo``) in
    the RDs the hooks were installed for."""
    for rd_id in common.Request.gotLength.rd_ids:
        for service in base.caches.getRD(rd_id).services:
            if service.limitTo:
                yield f"/{rd_id}/{service.id}/"


def _got_length(self, length, _dachs=common.Request.gotLength):
    """DaCHS's upload limiter, after the refusals that need no body."""
    _dachs(self, length)
    refusal = _request_body_refusal(self, length)
    if refusal:
        _answer_before_the_body(self, *refusal)


def _request_received(self, command, path, version, _dachs=common.Request.requestReceived):
    """DaCHS's request handling, unless the request was answered from its
    headers or its (chunked) body went over the upload limit."""
    if getattr(self, "rapas_answered", False):
        return
    if getattr(self.content, "discard", False):
        self.method, self.uri, self.clientproto = command, path, version
        self.setResponseCode(413)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.write(_over_the_limit(self.content.limit).encode())
        self.finish()
        return
    return _dachs(self, command, path, version)


#: seconds a UWS job's row is waited for (DaCHS: 0.1) before "Could not access the jobs table"
JOBS_TABLE_WAIT = 2.0

#: wrong passwords for one user name within LOGIN_WINDOW seconds that lock it for LOGIN_LOCKOUT seconds
LOGIN_FAILURES, LOGIN_WINDOW, LOGIN_LOCKOUT = 10, 60.0, 60.0


class _LoginThrottle:
    """Recent wrong passwords per user name, and the names locked out."""

    def __init__(self):
        self._lock = threading.Lock()
        self._failures = {}           # name -> monotonic times of recent failures
        self._locked_until = {}

    def locked(self, name):
        with self._lock:
            return self._locked_until.get(name, 0) > time.monotonic()

    def failed(self, name):
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if t > now - LOGIN_WINDOW] + [now]
            self._failures[name] = recent
            if len(recent) >= LOGIN_FAILURES:
                self._locked_until[name] = now + LOGIN_LOCKOUT
                self._failures[name] = []
            if len(self._failures) > 10000:          # names tried once long ago
                self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - LOGIN_WINDOW}


def _throttled_credentials(user, password, reqGroup, _dachs=creds.hasCredentials):
    """DaCHS's credential check, refused outright for a locked-out name;
    a wrong password counts towards the lockout (a right one outside the
    group does not)."""
    name = user.decode("utf-8", "replace") if isinstance(user, bytes) else (user or "")
    throttle = _throttled_credentials.throttle
    if not name:
        return _dachs(user, password, reqGroup)
    if throttle.locked(name):
        return False
    if _dachs(user, password, reqGroup):
        return True
    if not reqGroup or not _dachs(user, password, None):
        throttle.failed(name)
    return False


def _job_list_for_browsers(self, request, _dachs=asyncrender.JoblistResource.render_GET):
    """DaCHS's job list, unless the UWS sends this request to a page."""
    page_for = getattr(self.workerSystem, "job_list_page_for", None)
    page = page_for(request) if page_for else None
    if page:
        raise svcs.SeeOther(page)
    return _dachs(self, request)


def _head_for_every_screen(self, request, tag, _dachs=common.CommonRenderers.commonhead):
    """DaCHS's common head, with a viewport and the site's icon."""
    head = _dachs(self, request, tag)
    head.children[1:1] = [T.meta(name="viewport", content="width=device-width, initial-scale=1"),
                          T.link(rel="icon", href=base.makeSitePath("/favicon.ico"))]
    return head


_head_for_every_screen.exposedThrough = common.CommonRenderers.commonhead.exposedThrough


def _radio_default_checked(self, request, key, value, converter, disabled,
                           _dachs=formalwidget.RadioChoice._renderTag):
    """formal's radio group, with the default (its "none" option) ticked
    when the value is the default."""
    if self.noneOption is not None and value == converter.fromType(iformal.IKey(self.noneOption).key()):
        value = None
    return _dachs(self, request, key, value, converter, disabled)


def _jquery_parts_on_this_system(parts, root):
    """DaCHS's jquery-gavo.js parts without the files the installed Debian
    packages do not have (in-memory parts are kept)."""
    return [part for part in parts if hasattr(part, "read") or os.path.exists(os.path.join(root, part))]


def _in_place(owner, name, hook):
    """Whether ``owner.name`` is ``hook`` already (this module is loaded
    again when the RD changes: a hook must not wrap its own earlier copy)."""
    return getattr(getattr(owner, name), "__name__", "") == hook.__name__


def install(service):
    """Apply the hooks (once) and make ``service`` refuse uploads by URL."""
    static.File.contentTypes[".log"] = "text/plain; charset=utf-8"
    for owner, name, hook in ((formalwidget.RadioChoice, "_renderTag", _radio_default_checked),
                              (asyncrender.JoblistResource, "render_GET", _job_list_for_browsers),
                              (common.CommonRenderers, "commonhead", _head_for_every_screen),
                              (vosi.VOSICapabilityRenderer, "_getTree", _capabilities_tree),
                              (root.ArchiveService, "getChild", _archive_child),
                              (taprunner, "getQTableFromJob", _tap_query_within_its_time)):
        if not _in_place(owner, name, hook):
            setattr(owner, name, hook)
    ifpages.GavoJquery.PARTS = _jquery_parts_on_this_system(ifpages.GavoJquery.PARTS,
                                                            ifpages.GavoJquery.INSTALL_ROOT)
    if not hasattr(dali.mangleUploads, "file_only"):
        _mangle_uploads.file_only = set()
        dali.mangleUploads = _mangle_uploads
    uwsactions.ExecDAction.deserializeValue = staticmethod(_capped_execution_duration)
    customwidgets.Interval.processInput.__defaults__ = ([b"", b""],)
    uws._DEFAULT_LOCK_TIMEOUT = JOBS_TABLE_WAIT
    uws.UWS.changeableJob.__wrapped__.__defaults__ = (JOBS_TABLE_WAIT,)
    uws.UWS.changeToPhase.__defaults__ = (None, JOBS_TABLE_WAIT)
    if not _in_place(creds, "hasCredentials", _throttled_credentials):
        _throttled_credentials.throttle = _LoginThrottle()
        creds.hasCredentials = _throttled_credentials
    if not _in_place(common.Request, "gotLength", _got_length):
        _got_length.rd_ids = set()
        common.Request.gotLength = _got_length
        common.Request.requestReceived = _request_received
    common.Request.gotLength.rd_ids.add(service.rd.sourceId)
    dali.mangleUploads.file_only.add("/" + service.rd.sourceId + "/" + service.id + "/")

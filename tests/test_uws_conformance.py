"""The reduction service as standard UWS 1.1 clients drive it: schema-valid
documents, PHASE=RUN at creation, parameters that keep their values,
results that exist or are 404, uploads by URL refused at the door, and
VOSI capabilities that name the job list.
"""
import http.server
import threading

import pytest
import requests

from test_reduction_service import NOT_FITS, alice, error_message, exposure
from uws_client import FINAL

pytestmark = pytest.mark.archive


def _phase_and_end_time(xml):
    """(phase, endTime or '') of a UWS job document."""
    from xml.etree import ElementTree
    ns = {"uws": "http://www.ivoa.net/xml/UWS/v1.0"}
    root = ElementTree.fromstring(xml)
    return root.findtext("uws:phase", namespaces=ns), root.findtext("uws:endTime", namespaces=ns) or ""


@pytest.fixture(scope="module")
def run_at_creation(service):
    """A good and a broken frame, each created with PHASE=RUN and nothing
    else: {name: (job URL, final job)}."""
    client = alice(service)
    jobs = {"good": client.create(exposure(service, 41), PHASE="RUN"),
            "broken": client.create(NOT_FITS, filename="list.fits", PHASE="RUN")}
    assert all(isinstance(url, str) for url in jobs.values()), jobs
    return {name: (url, client.wait(url, timeout=300)) for name, url in jobs.items()}


def test_phase_run_at_creation_starts_the_job(run_at_creation):
    _, good = run_at_creation["good"]
    _, broken = run_at_creation["broken"]
    assert good.phase == "COMPLETED", error_message(good)
    assert broken.phase == "ERROR" and "not a readable FITS" in error_message(broken)


def test_job_documents_and_the_job_list_validate_against_uws_1_1(service, run_at_creation):
    session = alice(service).session
    for name, (url, _) in run_at_creation.items():
        document = session.get(url).content
        assert service.validate_xml(document) is None, (name, service.validate_xml(document))
        phase, end_time = _phase_and_end_time(document)
        assert phase in FINAL and end_time.startswith("20"), (name, phase, end_time)
        parameters = session.get(url + "/parameters").content
        assert service.validate_xml(parameters) is None, service.validate_xml(parameters)
        assert b'byReference="true"' in document and b'byReference="True"' not in parameters
    good = session.get(run_at_creation["good"][0]).text
    assert 'mime-type="image/fits"' in good and 'size="' in good
    job_list = session.get(service.jobs_url).content
    assert service.validate_xml(job_list) is None, service.validate_xml(job_list)
    assert run_at_creation["good"][0].encode() in job_list   # the list points where creation redirects


def test_a_missing_result_is_a_404(service, run_at_creation):
    session = alice(service).session
    broken_url, _ = run_at_creation["broken"]
    missing = session.get(broken_url + "/results/archive.json")
    assert missing.status_code == 404 and "archive.json" in missing.text
    good_url, _ = run_at_creation["good"]
    archived = session.get(good_url + "/results/archive.json")
    assert archived.status_code == 200 and archived.json()["obs_id"].startswith("rapas-")
    log = session.get(good_url + "/results/rapas.log")
    assert log.headers["content-type"].startswith("text/plain")


def test_a_boolean_set_to_false_stays_false_when_other_parameters_follow(service):
    client = alice(service)
    job_url = client.create(exposure(service, 42), psf="False", enrich="False")
    try:
        assert isinstance(job_url, str), job_url
        answer = client.session.post(job_url + "/parameters", data={"threshold": "6"}, allow_redirects=False)
        assert answer.status_code == 303
        parameters = {parameter.id_: parameter.content for parameter in client.job(job_url).parameters}
        assert parameters["psf"] == "False" and parameters["enrich"] == "False"
        assert float(parameters["threshold"]) == 6.0
    finally:
        client.session.delete(job_url, allow_redirects=False)


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits = []

    def do_GET(self):
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"SIMPLE  =                    T")

    def log_message(self, *args):
        pass


def test_an_upload_by_url_is_refused_at_creation_without_fetching_it(service):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = alice(service)
    before = client.session.get(service.jobs_url).text.count("<uws:jobref")
    try:
        url = f"http://127.0.0.1:{server.server_port}/frame.fits"
        refused = client.session.post(service.jobs_url, data={"UPLOAD": f"image,{url}", "PHASE": "RUN"},
                                      allow_redirects=False, timeout=30)
    finally:
        server.shutdown()
    assert refused.status_code == 400
    assert "upload by URL is not supported" in refused.text
    assert _Recorder.hits == []
    assert client.session.get(service.jobs_url).text.count("<uws:jobref") == before


def test_capabilities_are_valid_and_name_the_job_list(service):
    capabilities = requests.get(service.url + "/rapas/q/reduce/capabilities", auth=("alice", "s3cret")).content
    assert service.validate_xml(capabilities) is None, service.validate_xml(capabilities)
    assert (service.jobs_url + "<").encode() in capabilities and b"UWS 1.1" in capabilities

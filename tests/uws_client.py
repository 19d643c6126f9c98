"""A small UWS 1.1 client for the tests: requests for HTTP, pyvo's UWS
parser for job documents (pyvo has no generic UWS job class)."""
import io
import time

import requests
from pyvo.io import uws

FINAL = {"COMPLETED", "ERROR", "ABORTED"}


class UWSClient:
    def __init__(self, jobs_url, auth=None):
        self.jobs_url = jobs_url
        self.session = requests.Session()
        self.session.auth = auth

    def create(self, image=None, filename="frame.fits", **params):
        """POST a new job (DALI upload of ``image``, a path or bytes); returns
        the job URL, or the refusing response when the server says no."""
        files = {}
        data = {k.upper() if k.upper() in ("PHASE",) else k: str(v) for k, v in params.items()}
        if image is not None:
            payload = image if isinstance(image, bytes) else open(image, "rb").read()
            files["img"] = (filename, payload, "application/fits")
            data["UPLOAD"] = "image,param:img"
        response = self.session.post(self.jobs_url, data=data, files=files or None,
                                     allow_redirects=False, timeout=60)
        if response.status_code != 303:
            return response
        return response.headers["Location"]

    def run(self, job_url):
        response = self.session.post(job_url + "/phase", data={"PHASE": "RUN"}, allow_redirects=False)
        assert response.status_code == 303, response.text[:300]

    def abort(self, job_url):
        return self.session.post(job_url + "/phase", data={"PHASE": "ABORT"}, allow_redirects=False)

    def job(self, job_url, wait=None, server_errors=0):
        """The job document; ``server_errors`` 5xx answers are retried (a
        second apart), as a patient client would after a database restart."""
        params = {"WAIT": wait} if wait is not None else None
        for attempt in range(server_errors + 1):
            response = self.session.get(job_url, params=params, timeout=(wait or 0) + 30)
            if response.status_code < 500 or attempt == server_errors:
                break
            time.sleep(1.0)
        response.raise_for_status()
        return uws.parse_job(io.BytesIO(response.content))

    def wait(self, job_url, timeout=300, server_errors=0):
        """Block (UWS WAIT) until the job is in a final phase; returns the job."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_url, wait=5, server_errors=server_errors)
            if job.phase in FINAL:
                return job
        raise TimeoutError(f"{job_url} still {job.phase} after {timeout} s")

    def result(self, job_url, name):
        response = self.session.get(f"{job_url}/results/{name}", timeout=60)
        response.raise_for_status()
        return response.content

    def submit(self, image, **params):
        """create + run + wait; returns (job_url, job)."""
        job_url = self.create(image, **params)
        assert isinstance(job_url, str), f"creation refused: {job_url.status_code} {job_url.text[:300]}"
        self.run(job_url)
        return job_url, self.wait(job_url)

"""The bad-submission corpus (#14): broken files, impossible headers and
malformed parameters, submitted to the reduction service as a member would.
Each case ends in ERROR with one line naming what is wrong (or is refused
at creation with it), and the archive's row counts do not change.

The jobs are created together and run as the service's slots allow."""
import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from conftest import MAX_UPLOAD
from test_bad_input import edited_header
from test_reduction_service import NOT_FITS, _hdul_bytes, alice, counts, error_message, exposure, header_without_wcs

pytestmark = pytest.mark.archive


class Frames:
    """Bad frames made from one good exposure of the service's sky."""

    def __init__(self, service):
        self.path = exposure(service, 70)
        self.header = fits.getheader(self.path)
        self.data = fits.getdata(self.path)

    def good(self):
        return self.path.read_bytes()

    def with_header(self, **changes):
        return _hdul_bytes(fits.PrimaryHDU(self.data, edited_header(self.header, **changes)))

    def with_data(self, data):
        return _hdul_bytes(fits.PrimaryHDU(np.asarray(data, np.float32), self.header))

    def without_wcs(self):
        return _hdul_bytes(fits.PrimaryHDU(self.data, header_without_wcs(self.header)))


def _claiming(nx, ny):
    """A FITS header declaring an nx x ny float32 image, and a block of data."""
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", nx), ("NAXIS2", ny)])
    return header.tostring().encode("ascii") + bytes(2880)


def _gzip(payload):
    return gzip.compress(payload, compresslevel=1)


#: (name, frame bytes from Frames, file name, job parameters, words of the errorSummary)
JOB_CASES = [
    # files that are not an image
    ("not FITS", lambda f: NOT_FITS, "list.fits", {}, "not a readable FITS"),
    ("empty file", lambda f: b"", "empty.fits", {}, "not a readable FITS"),
    ("a web page named .fits", lambda f: b"<!DOCTYPE html><html><body>404</body></html>\n", "page.fits", {},
     "not a readable FITS"),
    ("truncated FITS", lambda f: f.good()[:30000], "cut.fits", {}, "not a readable FITS"),
    ("gzip of text", lambda f: _gzip(b"observing notes\n" * 100), "notes.fits.gz", {}, "not a readable FITS"),
    ("empty primary, no image HDU", lambda f: _hdul_bytes(fits.PrimaryHDU()), "empty.fits", {}, "no image"),
    ("a table only", lambda f: _hdul_bytes(fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("flux", "E", array=np.ones(10))])), "table.fits", {}, "no image"),
    ("3-D cube", lambda f: _hdul_bytes(fits.PrimaryHDU(np.zeros((3, 64, 64), np.float32))), "cube.fits", {}, "3-D"),
    ("header declaring 74.5 GiB", lambda f: _claiming(100_000, 200_000), "claim.fits", {},
     "more than this archive reduces"),
    ("gzip bomb", lambda f: _gzip(_claiming(40_000, 40_000)[:-2880] + bytes(2880 * 4000)), "bomb.fits.gz", {},
     "more than this archive reduces"),
    # pixels that hold no sky
    ("all-NaN frame", lambda f: f.with_data(np.full((256, 256), np.nan)), "nan.fits", {}, "NaN"),
    ("all +inf", lambda f: f.with_data(np.full((256, 256), np.inf)), "inf.fits", {}, "NaN"),
    ("all zeros", lambda f: f.with_data(np.zeros((256, 256))), "zeros.fits", {}, "same value"),
    ("saturated frame", lambda f: f.with_data(np.full((768, 768), 65535.0)), "sat.fits", {}, "same value"),
    ("8-bit constant", lambda f: _hdul_bytes(fits.PrimaryHDU(np.full((128, 128), 200, np.uint8), f.header)),
     "byte.fits", {}, "same value"),
    ("blank sky", lambda f: f.with_data(np.random.default_rng(1).normal(300, 15, (768, 768))), "blank.fits", {},
     "no stars"),
    ("tiny 8x8 image", lambda f: f.with_data(np.random.default_rng(2).normal(300, 15, (8, 8))), "tiny.fits", {},
     "too small"),
    ("a 1-pixel strip", lambda f: f.with_data(np.random.default_rng(3).normal(300, 15, (1, 4096))), "strip.fits",
     {}, "too small"),
    # header values that are missing or impossible
    ("unknown filter", lambda f: f.with_header(FILTER="H-alpha"), "ha.fits", {}, "unknown filter"),
    ("negative EXPTIME", lambda f: f.with_header(EXPTIME=-30.0), "neg.fits", {}, "must be positive"),
    ("zero EXPTIME", lambda f: f.with_header(EXPTIME=0.0), "zero.fits", {}, "must be positive"),
    ("EXPTIME of 1e30 s", lambda f: f.with_header(EXPTIME=1e30), "huge.fits", {}, "EXPTIME"),
    ("EXPTIME as text", lambda f: f.with_header(EXPTIME="long"), "text.fits", {}, "EXPTIME"),
    ("no exposure time", lambda f: f.with_header(EXPTIME=None, EXPOSURE=None, EXP_TIME=None, ITIME=None),
     "noexp.fits", {}, "exposure time"),
    ("DATE-OBS in the year 3000", lambda f: f.with_header(**{"DATE-OBS": "3000-01-01T00:00:00"}), "y3000.fits", {},
     "in the future"),
    ("DATE-OBS in 1700", lambda f: f.with_header(**{"DATE-OBS": "1700-01-01T00:00:00"}), "y1700.fits", {},
     "before 1850"),
    ("DATE-OBS not a date", lambda f: f.with_header(**{"DATE-OBS": "yesterday"}), "when.fits", {},
     "DATE-OBS 'yesterday' is not a date"),
    ("no date", lambda f: f.with_header(**{"DATE-OBS": None, "MJD-OBS": None, "DATE": None}), "nodate.fits", {},
     "no observation date"),
    ("singular WCS matrix", lambda f: f.with_header(CD1_1=0.0, CD1_2=0.0, CD2_1=0.0, CD2_2=0.0, CDELT1=None,
                                                    CDELT2=None, PC1_1=None, PC1_2=None, PC2_1=None, PC2_2=None),
     "singular.fits", {"plate_solve": "never"}, "WCS"),
    ("unknown projection", lambda f: f.with_header(CTYPE1="RA---XYZ", CTYPE2="DEC--XYZ"), "proj.fits",
     {"plate_solve": "never"}, "WCS"),
    ("declination beyond the pole", lambda f: f.with_header(CRVAL2=100.0), "pole.fits", {"plate_solve": "never"},
     "WCS"),
    ("no WCS and solving off", lambda f: f.without_wcs(), "nowcs.fits", {"plate_solve": "never"}, "no WCS"),
    ("no WCS and unsolvable", lambda f: f.without_wcs(), "nowcs.fits", {"solve_timeout": 5}, "plate solving failed"),
    ("file name with path characters", lambda f: b"not a frame", "../../../../tmp/rapas_escape.fits", {},
     "not a readable FITS"),
    # parameters the pipeline refuses (one of each kind: test_bad_input refuses
    # their variants at the command line, which is what a job runs)
    ("unknown band parameter", lambda f: f.good(), "b.fits", {"band": "Q"}, "unknown filter"),
    ("band beginning with '-'", lambda f: f.good(), "b.fits", {"band": "-x"}, "unknown filter"),
    ("two apertures", lambda f: f.good(), "a.fits", {"apertures": "1,2"}, "give four increasing positive radii"),
    ("site with five numbers", lambda f: f.good(), "s.fits", {"site": "1,2,3,4,5"},
     "give 'latitude,longitude[,height]'"),
    ("bad observatory code", lambda f: f.good(), "code.fits", {"observatory_code": "C95; rm -rf /"},
     "not an MPC code"),
]

#: (name, job parameters (None: no image), words of the refusal): refused when the job is created
CREATION_CASES = [
    ("seeing 0", {"seeing": "0"}, "seeing=0 is out of range"),
    ("negative border", {"border": "-5"}, "border=-5 is out of range"),
    ("calibrators to magnitude 99", {"max_calib_mag": "99"}, "max_calib_mag=99 is out of range"),
    ("negative threshold", {"threshold": "-5"}, "threshold=-5 is out of range"),
    ("declination 95", {"dec": "95"}, "dec=95 is out of range"),
    ("right ascension 400", {"ra": "400"}, "ra=400 is out of range"),
    ("solve timeout 0", {"solve_timeout": "0"}, "solve_timeout=0 is out of range"),
    ("threshold not a number", {"threshold": "abc"}, "'abc' is not a valid literal for threshold"),
    ("border with a unit", {"border": "2.5x"}, "'2.5x' is not a valid literal for border"),
    ("psf neither true nor false", {"psf": "maybe"}, "psf='maybe' is neither true nor false"),
    ("colour plane Z", {"colour_plane": "Z"}, "'Z' is not a valid value for colour_plane"),
    ("plate solving 'sometimes'", {"plate_solve": "sometimes"}, "'sometimes' is not a valid value for plate_solve"),
]


def test_the_bad_submission_corpus_fails_clearly_and_changes_nothing(service):
    client = alice(service)
    frames = Frames(service)
    before = counts(service)
    jobs = {}
    for name, make, filename, params, words in JOB_CASES:
        job_url = client.create(make(frames), filename=filename, PHASE="RUN", **params)
        assert isinstance(job_url, str), (name, job_url.status_code, job_url.text[:300])
        jobs[name] = (job_url, words)
    refusals = {}
    for name, params, words in CREATION_CASES:
        refusals[name] = (client.create(frames.path, **params), words)
    refusals["oversized upload"] = (client.create(b"\0" * (MAX_UPLOAD + 1000), filename="big.fits"),
                                    f"over this archive's limit of {MAX_UPLOAD} bytes")
    # a job may be created without its image (UWS: posted later); run so, it fails
    jobs["no image"] = (client.create(None, band="G", PHASE="RUN"), "Required parameter 'image' missing")
    refusals["upload by URL"] = (client.session.post(service.jobs_url, allow_redirects=False, timeout=60, data={
        "UPLOAD": "image,http://127.0.0.1:9/frame.fits", "PHASE": "RUN"}), "upload by URL is not supported")
    outcomes = {}
    for name, (job_url, words) in jobs.items():
        job = client.wait(job_url)
        message = error_message(job)
        outcomes[name] = (job.phase, message)
        assert job.phase == "ERROR" and words in message, (name, job.phase, message)
        assert "Traceback" not in message and "\n" not in message.strip() and len(message) < 400, (name, message)
        assert str(service.root) not in message, (name, message)
    for name, (answer, words) in refusals.items():
        assert not isinstance(answer, str), (name, "a job was created")
        assert answer.status_code in (400, 413), (name, answer.status_code)
        assert words in answer.text, (name, answer.text[:300])
        outcomes[name] = (answer.status_code, words)
    assert counts(service) == before
    assert not Path("/tmp/rapas_escape.fits").exists()
    assert len(outcomes) == len(JOB_CASES) + len(CREATION_CASES) + 3 == 54

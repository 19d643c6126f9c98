"""Bad input: a typed error with one line a person understands, a non-zero
CLI exit, and nothing left that looks like a complete product."""
import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from processing.config import Config
from processing.errors import (AstrometryError, CalibrationError, CatalogueError, HeaderError, InputError,
                               NoStarsError)
from processing.pipeline import reduce
from processing.simulate import simulate_frame


@pytest.fixture(scope="module")
def small_sim():
    return simulate_frame(shape=(512, 512), n_stars=250, seed=3)


def _write(path, data, header=None):
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
    return path


def edited_header(header, **changes):
    """A copy of ``header`` with ``changes`` (a value None removes the keyword)."""
    header = header.copy()
    for key, value in changes.items():
        if value is None:
            header.remove(key, ignore_missing=True)
        else:
            header[key] = value
    return header


def _cases(tmp, sim):
    """(name, path, config, expected error type, words the message must contain)"""
    ref = tmp / "ref.fits"
    sim.catalogue.write(ref, overwrite=True)
    cfg = Config(enrichment={}, refcat={"kind": "file", "path": str(ref)})
    rng = np.random.default_rng(0)
    text = tmp / "notes.fits"
    text.write_text("these are observing notes, not an image\n")
    good = sim.write(tmp / "good.fits")
    truncated = tmp / "truncated.fits"
    truncated.write_bytes(good.read_bytes()[:20000])
    empty_primary = tmp / "empty.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]
                 ).writeto(empty_primary)
    blank = rng.normal(300, 15, sim.image.shape).astype(np.float32)
    far_away = tmp / "far_ref.fits"
    far = sim.catalogue.copy()
    far["ra"] = (far["ra"] + 90) % 360
    far.write(far_away)
    return [
        ("not FITS", text, cfg, InputError, "not a readable FITS"),
        ("truncated FITS", truncated, cfg, InputError, "not a readable FITS"),
        ("no image HDU", empty_primary, cfg, InputError, "no image"),
        ("3-D cube", _write(tmp / "cube.fits", np.zeros((3, 64, 64), np.float32)), cfg, InputError, "3-D"),
        ("all NaN", _write(tmp / "nan.fits", np.full((128, 128), np.nan, np.float32)), cfg, InputError, "NaN"),
        ("constant", _write(tmp / "const.fits", np.full((128, 128), 65535, np.float32)), cfg, InputError, "same value"),
        ("blank sky", _write(tmp / "blank.fits", blank, sim.header), cfg, NoStarsError, "no stars"),
        ("unknown filter", _write(tmp / "filt.fits", sim.image, edited_header(sim.header, FILTER="Halpha-7nm")), cfg,
         HeaderError, "unknown filter"),
        ("negative EXPTIME", _write(tmp / "exp.fits", sim.image, edited_header(sim.header, EXPTIME=-5.0)), cfg,
         HeaderError, "must be positive"),
        ("no date", _write(tmp / "date.fits", sim.image, edited_header(sim.header, **{"DATE-OBS": None})), cfg,
         HeaderError, "no observation date"),
        ("DATE-OBS not a date",
         _write(tmp / "when.fits", sim.image, edited_header(sim.header, **{"DATE-OBS": "yesterday"})),
         cfg, HeaderError, "DATE-OBS 'yesterday' is not a date and the header has no MJD-OBS or JD"),
        ("one-row strip", _write(tmp / "strip.fits", sim.image[:1]), cfg, InputError,
         "image of 512x1 pixels is too small"),
        ("unknown projection",
         _write(tmp / "proj.fits", sim.image, edited_header(sim.header, CTYPE1="RA---XYZ", CTYPE2="DEC--XYZ")),
         cfg.with_options(plate_solve="never"), AstrometryError,
         "header WCS unreadable (Unrecognized projection code (XYZ in CTYPE1).)"),
        ("no WCS, solving off", _write(tmp / "nowcs.fits", sim.image,
                                      fits.Header([c for c in sim.header.cards
                                                   if not c.keyword.startswith(("C", "PC", "A_", "B_", "WCS"))])),
         cfg.with_options(plate_solve="never"), AstrometryError, "no WCS in header"),
        ("no calibrators", good, cfg.with_options(refcat={"kind": "file", "path": str(far_away)}),
         CalibrationError, "no calibrators"),
    ]


def test_each_bad_input_fails_clearly_and_leaves_no_product(tmp_path, small_sim):
    for name, path, config, error, words in _cases(tmp_path, small_sim):
        out = tmp_path / f"out-{name.replace(' ', '_')}"
        with pytest.raises(error) as info:
            reduce(path, out, config)
        message = str(info.value)
        assert words in message, (name, message)
        assert "\n" not in message and "Traceback" not in message and len(message) < 400, name
        assert not (out / "summary.json").exists(), name
        assert not (out / "calibrated.fits").exists() and not (out / ".partial").exists(), name
        error_doc = json.loads((out / "error.json").read_text())
        assert error_doc["message"] == message and error_doc["type"] == error.__name__
        assert "ERROR: " + message in (out / "rapas.log").read_text()


def test_unsolvable_field_fails_within_its_time_limit(tmp_path, small_sim):
    """No WCS on a 10-arcmin field: the Tycho-2 index cannot solve it."""
    header = fits.Header([c for c in small_sim.header.cards
                          if not c.keyword.startswith(("C", "PC", "A_", "B_", "WCS"))])
    path = _write(tmp_path / "nowcs.fits", small_sim.image, header)
    import time
    start = time.monotonic()
    with pytest.raises(AstrometryError, match="plate solving failed"):
        reduce(path, tmp_path / "out", Config(enrichment={}, solve_timeout_s=4))
    assert time.monotonic() - start < 30


def test_failed_rerun_removes_previous_products(tmp_path, small_sim):
    ref = tmp_path / "ref.fits"
    small_sim.catalogue.write(ref)
    cfg = Config(enrichment={}, refcat={"kind": "file", "path": str(ref)})
    image = small_sim.write(tmp_path / "img.fits")
    reduce(image, tmp_path / "out", cfg)
    assert (tmp_path / "out" / "summary.json").exists()
    _write(image, np.full((128, 128), np.nan, np.float32))
    with pytest.raises(InputError):
        reduce(image, tmp_path / "out", cfg)
    assert not (tmp_path / "out" / "summary.json").exists()
    assert not (tmp_path / "out" / "sources.vot").exists()


def test_cli_exit_code_and_one_line(tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_text("not fits")
    run = subprocess.run([sys.executable, "-m", "processing.cli", str(bad), "--out", str(tmp_path / "o"),
                          "--quiet"], capture_output=True, text=True)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == [f"rapas-reduce: bad.fits is not a readable FITS file ({lines[0].split('(', 1)[1]}"]
    assert "Traceback" not in run.stderr


PRELOAD_CHECK = """
import sys, threading
from processing.config import Config
from processing.errors import InputError
from processing.pipeline import reduce
try:
    reduce(sys.argv[1], sys.argv[3] + "/bad", Config(enrichment={}))
except InputError:
    pass
print("after refusal", "photutils.psf" in sys.modules)
reduce(sys.argv[2], sys.argv[3] + "/good",
       Config(enrichment={}, refcat={"kind": "file", "path": sys.argv[3] + "/ref.fits"}))
print("after reduction", [t.name for t in threading.enumerate() if t.name == "preload"],
      "photutils.psf" in sys.modules, "matplotlib.pyplot" in sys.modules, "processing.plots" in sys.modules)
"""


def test_imports_ahead_start_after_the_input_checks_and_end_with_the_reduction(tmp_path, small_sim):
    """``processing.preload`` in a new interpreter: a frame the input checks
    refuse fails without it (nothing more imported); a reduced frame leaves
    no import thread running (the plotting fork is safe), the modules
    imported, and the parent without the plotting module, which would set
    matplotlib's backend in the caller's process."""
    bad = tmp_path / "bad.fits"
    bad.write_text("not fits")
    small_sim.catalogue.write(tmp_path / "ref.fits")
    good = small_sim.write(tmp_path / "good.fits")
    run = subprocess.run([sys.executable, "-c", PRELOAD_CHECK, str(bad), str(good), str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == ["after refusal False", "after reduction [] True True False"]
    assert (tmp_path / "good" / "detections.png").exists()


def test_a_directory_without_frames_is_refused_with_one_line(tmp_path):
    (tmp_path / "night").mkdir()
    (tmp_path / "night" / "notes.txt").write_text("clouds")
    run = subprocess.run([sys.executable, "-m", "processing.cli", str(tmp_path / "night"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().startswith("rapas-reduce: no FITS files") and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("options, words", [
    (["--apertures", "1,2"], "give four increasing positive radii"),
    (["--apertures", "nan,1,2,3"], "give four increasing positive radii"),
    (["--apertures", "3,2,1.5,1"], "give four increasing positive radii"),
    (["--apertures", "one,two,three,four"], "give four increasing positive radii"),
    (["--site", "1,2,3,4,5"], "give 'latitude,longitude[,height]'"),
    (["--site", "95,10"], "give 'latitude,longitude[,height]'"),
    (["--site", "Paris"], "give 'latitude,longitude[,height]'"),
    (["--threshold=-5"], "--threshold -5 is out of range"),
    (["--seeing", "0"], "--seeing 0 is out of range"),
    (["--border=-5"], "--border -5 is out of range"),
    (["--max-calib-mag", "99"], "--max-calib-mag 99 is out of range"),
])
def test_implausible_options_are_refused_with_one_line(options, words):
    from processing.cli import _parser, config_from_args
    with pytest.raises(ValueError) as info:
        config_from_args(_parser().parse_args(["frame.fits", "--out", "o", *options]))
    assert words in str(info.value) and "\n" not in str(info.value)


def _claiming_header(nx, ny):
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", nx), ("NAXIS2", ny)])
    return header.tostring().encode("ascii")


def test_images_declaring_too_many_pixels_are_refused_unread(tmp_path, small_sim):
    import gzip
    from processing.fitsio import load_frame
    # a gzip bomb's head: 40000 x 40000 float32 (6.4 GB of zeros compress to 6 MB)
    with gzip.open(tmp_path / "bomb.fits.gz", "wb") as f:
        f.write(_claiming_header(40000, 40000) + bytes(2880 * 100))
    # a plain file whose header claims 74.5 GiB
    (tmp_path / "claim.fits").write_bytes(_claiming_header(100_000, 200_000) + bytes(2880))
    for name, pixels in (("bomb.fits.gz", "1,600"), ("claim.fits", "20,000")):
        with pytest.raises(InputError, match=f"declares {pixels} million pixels, more than this archive reduces"):
            load_frame(tmp_path / name)
    # a real gzip frame still loads; the limit is the configuration's
    good = small_sim.write(tmp_path / "good.fits")
    with open(good, "rb") as raw, gzip.open(tmp_path / "good.fits.gz", "wb") as packed:
        packed.write(raw.read())
    assert load_frame(tmp_path / "good.fits.gz").data.shape == small_sim.image.shape
    with pytest.raises(InputError, match="more than this archive reduces"):
        load_frame(good, max_pixels=small_sim.image.size - 1)


def test_non_numbers_in_numeric_options_are_refused_by_the_parser(capsys):
    from processing.cli import _parser
    with pytest.raises(SystemExit):
        _parser().parse_args(["frame.fits", "--out", "o", "--seeing", "nan"])
    assert "invalid number value: 'nan'" in capsys.readouterr().err


def test_unreachable_reference_catalogue_is_a_clear_error(tmp_path, small_sim):
    """The real TAP client, pointed at a local port where nothing listens."""
    import socket
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    image = small_sim.write(tmp_path / "img.fits")
    config = Config(enrichment={}, refcat={"kind": "tap", "url": f"http://127.0.0.1:{port}/tap",
                            "table": "gaiadr3.gaia_source", "timeout": 5})
    start = time.monotonic()
    with pytest.raises(CatalogueError) as info:
        reduce(image, tmp_path / "out", config)
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert message.startswith("the reference catalogue gaiadr3.gaia_source at 127.0.0.1:")
    assert "cannot be reached (connection refused" in message and "make refcat" in message, message
    assert len(message) < 250, message
    assert not (tmp_path / "out" / "summary.json").exists()

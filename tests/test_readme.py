"""The README's recipes, run as written against the test archive: its
curl and Python blocks, with only the server URL, the member's password,
the frame's path and the demo positions replaced by the test instance's.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pyvo

from test_reduction_service import NOT_FITS, exposure

pytestmark = pytest.mark.archive

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_blocks(section, language):
    """The code blocks of one README section (## heading), in order."""
    text = README.read_text()
    start = text.index("\n## " + section)
    end = text.find("\n## ", start + 1)
    blocks = re.findall(rf"```{language}\n(.*?)```", text[start:end], re.S)
    assert blocks, f"README section {section!r} has no {language} block"
    return blocks


def localised(code, service, frame=None):
    """The recipe pointed at the test instance (and its sky, for positions)."""
    code = (code.replace("http://localhost:8080", service.url)
            .replace("alice:SECRET", "alice:s3cret").replace('("alice", "SECRET")', '("alice", "s3cret")')
            .replace("150.1234", "210.0012").replace("2.2345", "-12.0034")
            .replace("150.1, 2.2", "210.0, -12.0"))
    return code.replace("frame.fits", str(frame)) if frame else code


def run_shell(code, cwd):
    """stdout of a shell recipe (its last command's status is not its
    outcome: a grep that finds no error message ends with 1)."""
    run = subprocess.run(["bash", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert run.stderr == "", run.stderr[-2000:]
    return run.stdout


def run_python(code, cwd):
    run = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.fixture
def frames(service, tmp_path):
    broken = tmp_path / "broken.fits"
    broken.write_bytes(NOT_FITS)
    return {"good": exposure(service, 43), "broken": broken}


def test_the_curl_recipe_follows_a_job_to_its_end(service, frames, tmp_path):
    [recipe] = readme_blocks("Submitting a frame", "sh")
    done = run_shell(localised(recipe, service, frames["good"]), tmp_path)
    assert "COMPLETED" in done and '"obs_id": "rapas-' in done and "detection" in done
    failed = run_shell(localised(recipe, service, frames["broken"]), tmp_path)
    assert "ERROR" in failed and "not a readable FITS" in failed
    assert "has no result archive.json" in failed and "You should not see this page" not in failed


def test_the_python_recipe_reports_success_and_failure(service, frames, tmp_path):
    [recipe] = readme_blocks("Submitting a frame", "python")
    done = run_python(localised(recipe, service, frames["good"]), tmp_path)
    assert done.startswith("COMPLETED {") and "'obs_id': 'rapas-" in done
    failed = run_python(localised(recipe, service, frames["broken"]), tmp_path)
    assert failed.startswith("ERROR ") and "not a readable FITS" in failed


def test_the_query_and_light_curve_recipes(service, tmp_path):
    [query] = readme_blocks("Querying", "python")
    run_python(localised(query, service) + "\nprint(len(images), len(stars), len(variables), len(notable))",
               tmp_path)
    add_target, light_curve = readme_blocks("Alert targets and light curves", "sh")[0], \
        readme_blocks("Alert targets and light curves", "python")[0]
    added = run_shell(localised(add_target, service), tmp_path)
    assert "<VOTABLE" in added and 'value="ERROR"' not in added
    tap = pyvo.dal.TAPService(service.url + "/tap")
    assert len(tap.search("SELECT name FROM rapas.targets WHERE name = 'AT 2026abc'")) == 1
    run_python(localised(light_curve, service) + "\nprint(len(lc), len(series), len(images), len(registry))",
               tmp_path)
    assert (tmp_path / "lc.png").read_bytes()[:4] == b"\x89PNG"

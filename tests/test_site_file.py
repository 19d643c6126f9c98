"""The archive's site file (inputs/rapas/etc/archive.toml) and its renderer."""
import importlib.util
import subprocess

import pytest

from dachs_instance import DACHS_PYTHON, REPO

SITE_FILE = REPO / "inputs" / "rapas" / "etc" / "archive.toml"
RENDERER = REPO / "inputs" / "rapas" / "res" / "archivesite.py"


def _renderer():
    spec = importlib.util.spec_from_file_location("archivesite", RENDERER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: DaCHS's placeholder texts that must never reach a record
PLACEHOLDERS = _renderer().PLACEHOLDERS


def test_the_shipped_site_file_renders_without_placeholders(tmp_path):
    template = REPO / "inputs" / "rapas" / "etc" / "gavo.rc"
    subprocess.run([DACHS_PYTHON, str(RENDERER), str(SITE_FILE), "--config-dir", str(tmp_path),
                    "--gavo-rc", str(tmp_path / "gavo.rc"), "--gavo-rc-template", str(template), "--nproc", "3"],
                   check=True)
    meta = (tmp_path / "defaultmeta.txt").read_text()
    rc = (tmp_path / "gavo.rc").read_text()
    assert "contact.email: rapas-archive@localhost" in meta and "authority.shortName: RAPAS\n" in meta
    assert "authority: rapas.archive" in rc and "maxUserUWSRunningDefault: 3" in rc and "@" not in rc
    assert not [p for p in PLACEHOLDERS if p in meta + rc]


@pytest.mark.parametrize("change, words", [
    (('email = "rapas-archive@localhost"', 'email = "invalid@example.com"'), "[contact] email still says"),
    (('short_name = "RAPAS"', 'short_name = "RAPAS transient archive"'), "more than 16 characters"),
    (('name = "RAPAS Archive operators"\n', ''), "[contact] name is missing"),
])
def test_an_unusable_site_file_is_refused_with_one_line(tmp_path, change, words):
    site = tmp_path / "archive.toml"
    site.write_text(SITE_FILE.read_text().replace(*change))
    run = subprocess.run([DACHS_PYTHON, str(RENDERER), str(site), "--config-dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and words in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert not (tmp_path / "defaultmeta.txt").exists()

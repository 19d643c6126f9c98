"""Render the site file (inputs/rapas/etc/archive.toml) into DaCHS's
configuration: ``defaultmeta.txt`` (publisher, contact, authority and
organisation metadata, read by the records of etc/userconfig.rd); with
``--gavo-rc``, ``/etc/gavo.rc`` (site name, server URL, authority); with
``--web-templates``, DaCHS's TAP examples page with DALI's vocabulary.

Runs on Debian's Python (tomllib, no DaCHS import):
    python3 archivesite.py archive.toml --config-dir /var/gavo/etc \\
        [--gavo-rc /etc/gavo.rc --gavo-rc-template inputs/rapas/etc/gavo.rc --nproc 2] \\
        [--web-templates /var/gavo/web/templates]

Refuses (exit 2, one line) a site file that is incomplete or still
carries DaCHS's placeholders.
"""
import argparse
import importlib.util
import sys
import tomllib
from pathlib import Path

#: what every site file must give, as (table, key)
REQUIRED = [("site", "name"), ("site", "server_url"), ("site", "authority"), ("site", "short_name"),
            ("site", "created"), ("site", "description"), ("publisher", "name"),
            ("publisher", "reference_url"), ("publisher", "description"), ("contact", "name"),
            ("contact", "email"), ("contact", "address")]

#: texts of DaCHS's defaultmeta.txt and userconfig.rd that must never reach a record
PLACEHOLDERS = ["Your organisation", "Fill Out", "invalid@example.com", "Delete this line",
                "Ordinary street address", "Could be same as", "UNCONFIGURED", "relatively terse",
                "<13 chrs"]


class SiteError(Exception):
    """The site file cannot be used; the text says why."""


def read_site(path):
    """The site file's values, checked."""
    try:
        site = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SiteError(f"site file {path}: {exc}") from exc
    for table, key in REQUIRED:
        value = site.get(table, {}).get(key)
        if not isinstance(value, str) or not value.strip():
            raise SiteError(f"site file {path}: [{table}] {key} is missing or empty")
        for placeholder in PLACEHOLDERS:
            if placeholder.lower() in value.lower():
                raise SiteError(f"site file {path}: [{table}] {key} still says {placeholder!r}")
    if len(site["site"]["short_name"]) > 16:
        raise SiteError(f"site file {path}: [site] short_name has more than 16 characters")
    return site


def _meta_value(text):
    """A defaultmeta.txt value: one logical line (continuations escaped)."""
    return " \\\n  ".join(line.strip() for line in text.strip().splitlines())


def defaultmeta(site):
    """The text of DaCHS's etc/defaultmeta.txt for ``site``."""
    s, p, c = site["site"], site["publisher"], site["contact"]
    entries = [
        ("publisher", p["name"]), ("creator.name", p["name"]),
        ("contact.name", c["name"]), ("contact.email", c["email"]), ("contact.address", c["address"]),
        ("authority.creationDate", s["created"]), ("authority.shortName", s["short_name"]),
        ("authority.title", f"{s['name']} authority ({s['authority']})"),
        ("authority.description", f"The IVOA naming authority of the {s['name']}: " + s["description"]),
        ("authority.referenceURL", s["server_url"] + "/"),
        ("organisation.referenceURL", p["reference_url"]),
        ("organisation.description", p["description"]),
        ("site.description", s["description"]),
        ("_noresultwarning", "Your query did not match any data."),
    ]
    return ("# Written by inputs/rapas/res/archivesite.py from the RAPAS site file: edit that, not this.\n"
            + "".join(f"{key}: {_meta_value(value)}\n" for key, value in entries))


def gavo_rc(site, template, nproc):
    """/etc/gavo.rc from its template, with the site's name, URL and authority."""
    s = site["site"]
    return (template.replace("@NPROC@", str(nproc)).replace("@SITENAME@", s["name"])
            .replace("@SERVER_URL@", s["server_url"]).replace("@AUTHORITY@", s["authority"]))


def examples_template():
    """DaCHS's TAP examples page (a site template DaCHS looks for in
    rootDir/web/templates first) declaring DALI 1.1's examples vocabulary;
    DaCHS 2.7's declares the one TOPCAT 4.3-4.4 needed, which taplint
    reports as contrary to DALI."""
    gavo = Path(importlib.util.find_spec("gavo").submodule_search_locations[0])
    page = (gavo / "resources" / "templates" / "examples.html").read_text()
    dachs_vocab = 'vocab="ivo://ivoa.net/std/DALI-examples#"'
    if dachs_vocab not in page:
        raise SiteError("DaCHS's examples.html has changed: check its vocab attribute by hand")
    return page.replace(dachs_vocab, 'vocab="ivo://ivoa.net/std/DALI#examples"')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", help="the site file (TOML)")
    parser.add_argument("--config-dir", required=True, help="DaCHS's configDir (defaultmeta.txt goes there)")
    parser.add_argument("--gavo-rc", help="write DaCHS's gavo.rc here")
    parser.add_argument("--gavo-rc-template", help="the gavo.rc template (with @NPROC@, @SITENAME@, ...)")
    parser.add_argument("--nproc", type=int, default=1, help="reduction jobs running at once")
    parser.add_argument("--web-templates", help="DaCHS's site template directory (rootDir/web/templates)")
    args = parser.parse_args(argv)
    try:
        site = read_site(args.site)
        examples = examples_template() if args.web_templates else None
    except SiteError as exc:
        print(f"archivesite.py: {exc}", file=sys.stderr)
        return 2
    Path(args.config_dir, "defaultmeta.txt").write_text(defaultmeta(site))
    if examples:
        Path(args.web_templates).mkdir(parents=True, exist_ok=True)
        Path(args.web_templates, "examples.html").write_text(examples)
    if args.gavo_rc:
        Path(args.gavo_rc).write_text(gavo_rc(site, Path(args.gavo_rc_template).read_text(), args.nproc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

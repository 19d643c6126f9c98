"""A throwaway DaCHS instance for the tests: its own root directory, gavo.rc,
database, PostgreSQL roles and port; the project's RD imported; torn down
afterwards.  It never touches /var/gavo or the demo instance.

DaCHS runs on Debian's /usr/bin/python3 (``dachs`` and helper scripts are
started as subprocesses with GAVOSETTINGS pointing at the instance's gavo.rc);
the tests talk to it over HTTP with pyvo, as a user would.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DACHS_PYTHON = "/usr/bin/python3"

GAVO_RC = """\
[general]
rootDir: {root}
[web]
serverPort: {port}
bindAddress: 127.0.0.1
serverURL: http://127.0.0.1:{port}
sitename: RAPAS test archive
maxUploadSize: {max_upload}
maxSyncUploadSize: 20000000
operatorCSS: /rapas/q/web/static/rapas.css
favicon: ../inputs/rapas/res/web/favicon.ico
[ivoa]
authority: rapas.test
[async]
maxUserUWSRunningDefault: {max_jobs}
# a sync TAP query's time limit (DaCHS: 60 s), short enough to test it
defaultExecTimeSync: 10
"""

INIT_SCRIPT = """
from gavo import base
from gavo.user import initdachs
dsn = initdachs.DSN("dbname={dbname}")
initdachs.createFSHierarchy(dsn, userPrefix="{prefix}")
initdachs.initDB(dsn)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DachsInstance:
    def __init__(self, root, max_jobs=2, max_upload=200_000_000, server_env=None):
        self.root = Path(root)
        self.port = free_port()
        self.dbname = f"rapas_test_{self.port}"
        self.prefix = f"rt{self.port}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.max_jobs = max_jobs
        self.max_upload = max_upload
        self.server = None
        self.env = dict(os.environ, GAVOSETTINGS=str(self.root / "gavo.rc"))
        self.env.pop("PYTHONPATH", None)
        self.server_env = dict(self.env, **(server_env or {}))
        self.resdir = self.root / "inputs" / "rapas"

    # ---- life cycle -------------------------------------------------------
    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "gavo.rc").write_text(GAVO_RC.format(root=self.root, port=self.port,
                                                          max_jobs=self.max_jobs,
                                                          max_upload=self.max_upload))
        subprocess.run(["createdb", "--encoding=UTF-8", "--template=template0", self.dbname], check=True)
        subprocess.run(["psql", "-q", "-d", self.dbname, "-f", str(REPO / "inputs" / "rapas" / "etc" / "database.sql")],
                       check=True, capture_output=True)
        self.python(INIT_SCRIPT.format(dbname=self.dbname, prefix=self.prefix))
        self._configure_site()
        self._link_resource_directory()
        self._seed_vocabularies()
        self.dachs("imp", "//obscore")
        self.dachs("imp", "//uws", "enable_useruws")
        self.dachs("imp", "rapas/q")
        self._start_server()
        return self

    def _configure_site(self):
        """The site metadata, registry records and TAP examples "make install"
        writes into /var/gavo/etc, from the project's site file."""
        etc = self.root / "etc"
        subprocess.run([DACHS_PYTHON, str(REPO / "inputs" / "rapas" / "res" / "archivesite.py"),
                        str(REPO / "inputs" / "rapas" / "etc" / "archive.toml"), "--config-dir", str(etc),
                        "--web-templates", str(self.root / "web" / "templates")],
                       check=True, capture_output=True, text=True)
        (etc / "userconfig.rd").unlink(missing_ok=True)
        (etc / "userconfig.rd").symlink_to(REPO / "inputs" / "rapas" / "etc" / "userconfig.rd")

    def publish(self):
        """"make publish": the holdings' coverage, then the Registry records;
        the server is restarted to read them ("make publish" sends SIGHUP,
        which the debug server does not handle)."""
        self.dachs("limits", "-t", "rapas/q")
        self.dachs("pub", "//services", "//tap", "//obscore", "rapas/q")
        self._stop_server()
        self._start_server()

    def validate_xml(self, document):
        """Errors of ``document`` (bytes) against the IVOA schemas DaCHS ships
        (VOResource and its extensions, OAI-PMH, UWS, VOSI; lxml); None if valid."""
        code = ("import sys\nfrom gavo.helpers import testtricks\n"
                "print(testtricks.getXSDErrors(sys.stdin.buffer.read()) or '', end='')")
        run = subprocess.run([DACHS_PYTHON, "-c", code], env=self.env, input=document, capture_output=True,
                             check=True)
        return run.stdout.decode() or None

    def _seed_vocabularies(self):
        """Offline stand-ins for IVOA vocabularies DaCHS would download."""
        code = ("import shutil, sys\nfrom gavo import base, utils\n"
                "shutil.copy(sys.argv[1], base.getConfig('cacheDir') + '/'"
                " + utils.defuseFileName('http://www.ivoa.net/rdf/uat'))")
        self.python(code, str(REPO / "inputs" / "rapas" / "res" / "vocabularies" / "uat.desise"))

    def _link_resource_directory(self):
        self.resdir.mkdir(parents=True, exist_ok=True)
        for name, target in (("q.rd", REPO / "rd" / "q.rd"), ("refcat.rd", REPO / "rd" / "refcat.rd"),
                             ("localcat.rd", REPO / "rd" / "localcat.rd"),
                             ("res", REPO / "inputs" / "rapas" / "res")):
            link = self.resdir / name
            if not link.exists():
                link.symlink_to(target)
        (self.resdir / "data").mkdir(exist_ok=True)
        (self.resdir / "staging").mkdir(exist_ok=True)

    def _start_server(self):
        log = open(self.root / "server.log", "ab")
        self.server = subprocess.Popen(["dachs", "serve", "debug"], env=self.server_env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"dachs serve debug exited; see {self.root / 'server.log'}")
            try:
                urllib.request.urlopen(self.url + "/tap/availability", timeout=2).read()
                # what [web]preloadRDs does for "make install"'s server (dachs
                # serve debug preloads nothing): the RD and its site hooks
                urllib.request.urlopen(self.url + "/rapas/q/cone/availability", timeout=30).read()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the test DaCHS server did not answer within 60 s")

    def _stop_server(self):
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()

    @property
    def uws_directory(self):
        """DaCHS's job directories ([async]uwsWD's default)."""
        return self.root / "state" / "uwsjobs"

    def job_directory(self, job_url):
        return self.uws_directory / job_url.rstrip("/").rsplit("/", 1)[-1]

    def crash_server(self):
        """SIGKILL the server and the job runners it started (its process
        group), as a crash or an OOM kill of the service would."""
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait()

    def start_server(self):
        self._start_server()

    def stop(self):
        self._stop_server()
        subprocess.run(["dropdb", "--if-exists", self.dbname], check=False)
        roles = ", ".join(f"{self.prefix}{r}" for r in ("gavoadmin", "gavo", "untrusted"))
        subprocess.run(["psql", "-q", "-d", "postgres", "-c", f"DROP ROLE IF EXISTS {roles}"],
                       check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- helpers ------------------------------------------------------------
    def add_user(self, name, password, group=None):
        self.dachs("adm", "adduser", name, password)
        if group:
            self.dachs("adm", "addtogroup", name, group)

    def dachs(self, *args, check=True):
        return subprocess.run(["dachs", *args], env=self.env, check=check, capture_output=True, text=True)

    def python(self, code, *args, check=True):
        return subprocess.run([DACHS_PYTHON, "-c", code, *args], env=self.env, check=check,
                              capture_output=True, text=True)

    def ingest(self, *product_dirs, check=True):
        """Run the archive's ingestion command; returns the CompletedProcess."""
        return subprocess.run([DACHS_PYTHON, str(REPO / "inputs" / "rapas" / "res" / "ingest.py"),
                               *map(str, product_dirs)], env=self.env, check=check,
                              capture_output=True, text=True)

    def remove(self, *obs_ids, reason="test clean-up", check=True):
        """Withdraw images from the archive (ingest.py --remove, an administrator)."""
        return subprocess.run([DACHS_PYTHON, str(REPO / "inputs" / "rapas" / "res" / "ingest.py"), "--remove",
                               *obs_ids, "--reason", reason], env=self.env, check=check, capture_output=True,
                              text=True)

    # Tests sharing the instance each add their own extracts under their own
    # file names: the tables serve the union (the skies are far apart), so
    # no test replaces another's reference stars.
    def load_reference_catalogue(self, path, tag):
        """Serve a Gaia-schema FITS table in gaiadr3.gaia_source ("make refcat")."""
        (self.resdir / "refcat").mkdir(exist_ok=True)
        shutil.copy(path, self.resdir / "refcat" / f"gaia_source_{tag}.fits")
        self.dachs("imp", "rapas/refcat")
        return f"{self.url}/tap"

    def load_vizier_gaia(self, catalogue):
        """Serve a Gaia-schema table under VizieR's I/355/gaiadr3 column names as
        i355.gaiadr3 (a test-only RD, tests/rd/i355.rd)."""
        from astropy.table import Table
        names = {"source_id": "Source", "ra": "RA_ICRS", "dec": "DE_ICRS", "pmra": "pmRA", "pmdec": "pmDE",
                 "phot_g_mean_mag": "Gmag", "phot_bp_mean_mag": "BPmag", "phot_rp_mean_mag": "RPmag"}
        (self.resdir / "refcat").mkdir(exist_ok=True)
        Table({new: catalogue[old] for old, new in names.items()}).write(
            self.resdir / "refcat" / "vizier_gaiadr3.fits", overwrite=True)
        link = self.resdir / "i355.rd"
        if not link.exists():
            link.symlink_to(REPO / "tests" / "rd" / "i355.rd")
        self.dachs("imp", "rapas/i355")
        return f"{self.url}/tap"

    def load_crossid_catalogues(self, tables, tag):
        """Serve SIMBAD-, VSX- and Milliquas-like tables ({'simbad_basic'|'vsx'|
        'milliquas': astropy Table}) in localcat.basic, .vsx, .milliquas ("make refcat")."""
        (self.resdir / "refcat").mkdir(exist_ok=True)
        for name, table in tables.items():
            table.write(self.resdir / "refcat" / f"{name}_{tag}.fits", overwrite=True)
        self.dachs("imp", "rapas/localcat")
        return f"{self.url}/tap"

    def sql(self, query):
        """Rows of a read-only query on the instance's database (for checks
        tests can't make over TAP), as JSON values (dates as text).  Plain
        psycopg2 on Debian's Python, as the superuser the instance was made
        by: DaCHS's start-up (a second and more) is not paid per check."""
        code = ("import sys, json, psycopg2\n"
                "with psycopg2.connect(dbname=sys.argv[1]) as c, c.cursor() as cursor:\n"
                "    cursor.execute(sys.argv[2])\n"
                "    print(json.dumps([list(r) for r in cursor.fetchall()], default=str))")
        import json
        run = subprocess.run([DACHS_PYTHON, "-c", code, self.dbname, query], check=True, capture_output=True,
                             text=True)
        return json.loads(run.stdout)

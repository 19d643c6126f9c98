# RAPAS Archive.  Two commands on a fresh Debian 12 machine, as root:
#   make install   Debian packages, the pipeline's venv, PostgreSQL and DaCHS
#                  started, the RD imported, the demo frame reduced and ingested
#   make test      everything the tests need, then the whole test suite
# Running either twice is harmless.

SHELL := /bin/bash
REPO := $(CURDIR)
VENV := $(REPO)/.venv
PY := $(VENV)/bin/python
DACHS_PY := /usr/bin/python3
GAVO_ROOT := /var/gavo
RESDIR := $(GAVO_ROOT)/inputs/rapas
BUILD := $(REPO)/build
SERVER := http://localhost:8080
# who runs this archive (publisher, contact, authority, server URL): see the file
ARCHIVE_SITE ?= $(REPO)/inputs/rapas/etc/archive.toml
export DEBIAN_FRONTEND := noninteractive

BASE_PACKAGES := postgresql postgresql-15-pgsphere postgresql-15-q3c python3-venv python3-dev curl
DACHS_PACKAGES := gavodachs2-server python3-astropy python3-scipy python3-matplotlib astrometry.net astrometry-data-tycho2-07 astrometry-data-tycho2-08 \
	astrometry-data-tycho2-09 astrometry-data-tycho2-10-19 source-extractor scamp psfex stilts

.PHONY: install test browser loadtest bench bench-archive deps postgres venv site deploy demo serve publish urls demo-data refcat clean

install: deps postgres venv deploy serve demo publish urls

# PostgreSQL must be running when gavodachs2-server's postinst creates the
# gavo database, so it is installed and started first.
deps:
	@if ! dpkg -s $(BASE_PACKAGES) $(DACHS_PACKAGES) >/dev/null 2>&1; then \
	  apt-get update -q && \
	  apt-get install -y -q --no-install-recommends $(BASE_PACKAGES) && \
	  { pg_ctlcluster 15 main status >/dev/null 2>&1 || pg_ctlcluster 15 main start; } && \
	  apt-get install -y -q --no-install-recommends $(DACHS_PACKAGES) && \
	  dpkg --configure -a; \
	fi

# No systemd here: the cluster is started with pg_ctlcluster.  The tests'
# throwaway DaCHS instances are initialised by root, which needs a
# superuser role of its own name.
postgres: deps
	@pg_ctlcluster 15 main status >/dev/null 2>&1 || pg_ctlcluster 15 main start
	@su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='root'\"" | grep -q 1 \
	  || su postgres -c "createuser --superuser root"

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml | deps
	$(DACHS_PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

# The RD and its helper code stay in this checkout (symlinked); product
# files go to $(RESDIR)/data, owned by the gavo user the server runs as.
# DaCHS's site configuration from the site file: /etc/gavo.rc, in
# $(GAVO_ROOT)/etc the site metadata (defaultmeta.txt) and the site's
# registry records and TAP examples (userconfig.rd), and the TAP examples
# page template with DALI's vocabulary ($(GAVO_ROOT)/web/templates)
site: deps
	$(DACHS_PY) $(REPO)/inputs/rapas/res/archivesite.py $(ARCHIVE_SITE) --config-dir $(GAVO_ROOT)/etc --gavo-rc /etc/gavo.rc \
	  --gavo-rc-template $(REPO)/inputs/rapas/etc/gavo.rc --nproc $$(nproc) --web-templates $(GAVO_ROOT)/web/templates
	ln -sfn $(REPO)/inputs/rapas/etc/userconfig.rd $(GAVO_ROOT)/etc/userconfig.rd

deploy: postgres site
	install -d -o gavo -g gavo $(RESDIR)/data $(RESDIR)/staging
	@# product files the server's jobs must replace or withdraw are the gavo user's
	@find $(RESDIR)/data $(RESDIR)/staging ! -user gavo -exec chown gavo:gavo {} +
	ln -sfn $(REPO)/rd/q.rd $(RESDIR)/q.rd
	ln -sfn $(REPO)/rd/refcat.rd $(RESDIR)/refcat.rd
	ln -sfn $(REPO)/rd/localcat.rd $(RESDIR)/localcat.rd
	ln -sfn $(REPO)/inputs/rapas/res $(RESDIR)/res
	@cache=$$($(DACHS_PY) -c "from gavo import base, utils; print(base.getConfig('cacheDir') + '/' + utils.defuseFileName('http://www.ivoa.net/rdf/uat'))"); \
	  test -s $$cache || install -o gavo -g gavo -m 644 $(REPO)/inputs/rapas/res/vocabularies/uat.desise $$cache
	@# the archive database's own settings (JIT off), as a superuser
	psql -q -d gavo -f $(REPO)/inputs/rapas/etc/database.sql
	dachs imp //obscore
	dachs imp //uws enable_useruws
	@# tables of an older RD are rebuilt from the product files on disk
	@# (ingest.py --catch-up); the members' targets and the withdrawals'
	@# audit trail are kept aside and restored (the targets measured again)
	@if dachs val -c rapas/q 2>&1 | grep -q "No matches in DB\|mismatching"; then \
	  echo "rapas/q: the tables differ from the RD; re-creating them from $(RESDIR)/data"; \
	  mkdir -p $(BUILD); $(DACHS_PY) $(RESDIR)/res/lightcurve.py --export $(BUILD)/targets.jsonl 2>/dev/null || true; \
	  psql -d gavo -qc "\copy rapas.withdrawals TO '$(BUILD)/withdrawals.csv' CSV" 2>/dev/null || true; \
	  dachs drop rapas/q; fi
	dachs imp rapas/q
	runuser -u gavo -- $(DACHS_PY) $(REPO)/inputs/rapas/res/ingest.py --catch-up
	@if [ -s $(BUILD)/targets.jsonl ]; then $(DACHS_PY) $(RESDIR)/res/lightcurve.py --import $(BUILD)/targets.jsonl \
	  && mv $(BUILD)/targets.jsonl $(BUILD)/targets.restored.jsonl; fi
	@if [ -s $(BUILD)/withdrawals.csv ]; then psql -d gavo -qc "\copy rapas.withdrawals FROM '$(BUILD)/withdrawals.csv' CSV" \
	  && mv $(BUILD)/withdrawals.csv $(BUILD)/withdrawals.restored.csv; fi
	dachs imp -m rapas/q
	@# the ObsCore view is rebuilt from what rapas/q contributes now
	dachs imp //obscore

serve: deploy
	@if curl -sf -o /dev/null $(SERVER)/; then dachs serve restart; else dachs serve start; fi
	@for i in $$(seq 60); do curl -sf -o /dev/null $(SERVER)/tap/availability && exit 0; sleep 1; done; \
	  echo "DaCHS did not answer on $(SERVER)"; exit 1

# The demo frame is a simulated sky: no enrichment (real catalogues would
# name its made-up stars).
demo: venv serve
	$(VENV)/bin/rapas-reduce $(REPO)/inputs/rapas/demo/demo.fits --out $(BUILD)/demo \
	  --refcat $(REPO)/inputs/rapas/demo/demo_refcat.fits --no-enrich --quiet
	runuser -u gavo -- $(DACHS_PY) $(REPO)/inputs/rapas/res/ingest.py $(BUILD)/demo
	@# a demo alert target at the frame's centre: its light curve has one point
	@runuser -u gavo -- $(DACHS_PY) $(REPO)/inputs/rapas/res/lightcurve.py --add "DEMO 2026a" 150.1 2.2 SN 2>/dev/null \
	  || echo "(the demo target is in the archive already)"

# The Registry records (/oai.xml): the authority, the organisation and the
# publishing registry, the TAP service with ObsCore, SIAP2, the cone search
# and DataLink, with the holdings' sky (MOC), time and spectral coverage.
# Run it again after ingesting frames to bring the coverage up to date.
publish:
	dachs limits -t rapas/q
	dachs pub //services //tap //obscore rapas/q
	@# the running server reads the new coverage once its caches are cleared
	@dachs serve reload 2>/dev/null || echo "(DaCHS is not running: it serves the records when it starts)"

urls:
	@echo
	@echo "RAPAS Archive is up:"
	@echo "  SIAP2          $(SERVER)/rapas/q/siap2/siap2.xml"
	@echo "  TAP (ObsCore)  $(SERVER)/tap          tables ivoa.obscore, rapas.images, rapas.sources, rapas.notable,"
	@echo "                                               rapas.targets, rapas.lightcurves, rapas.instruments"
	@echo "  targets form   $(SERVER)/rapas/q/target_edit/form   (members)"
	@echo "  withdraw form  $(SERVER)/rapas/q/withdraw/form   (members, their own images)"
	@echo "  TAP examples   $(SERVER)/tap/examples"
	@echo "  cone search    $(SERVER)/rapas/q/cone/scs.xml"
	@echo "  reduction UWS  $(SERVER)/rapas/q/reduce/async   (members)"
	@echo "  reduce a frame $(SERVER)/rapas/q/reduce/form   (members; the job's page follows)"
	@echo "  my jobs        $(SERVER)/rapas/q/reduce/static/jobs.html   (members)"
	@echo "  Registry       $(SERVER)/oai.xml   (OAI-PMH; refresh the records: make publish)"
	@echo "  image form     $(SERVER)/rapas/q/browse/form"
	@echo "  SIAP2 form     $(SERVER)/rapas/q/siap2/form"
	@echo "  demo image     $(SERVER)/rapas/q/web/static/image.html?obs_id=$$(curl -s '$(SERVER)/tap/sync?LANG=ADQL&REQUEST=doQuery&RESPONSEFORMAT=csv&QUERY=SELECT+obs_id+FROM+rapas.images' | tail -n +2 | head -1 | tr -d '\r')"

# the browser tests' headless Chromium and its WebDriver, from Debian
BROWSER_PACKAGES := chromium chromium-driver

test: deps postgres venv browser
	cd $(REPO) && $(PY) -m pytest -q --durations=40 -m "not load"

browser: deps
	@dpkg -s $(BROWSER_PACKAGES) >/dev/null 2>&1 || apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) \
	  || { apt-get update -q && apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES); }

# 50 reductions from three members at once, TAP queried meanwhile: jobs
# lost or duplicated (none) and TAP's latency under load (a few minutes)
loadtest: deps postgres venv
	cd $(REPO) && $(PY) -m pytest -q -s -m load tests/test_load.py

bench: venv
	$(PY) -m processing.bench

# the archive at 10^7 sources in a throwaway DaCHS instance: query latencies,
# bulk ingestion, clustered and partitioned (about 12 min; see
# tests/bench_archive.py for 10^8)
bench-archive: deps postgres venv
	$(PY) tests/bench_archive.py --cluster --partition 64

# Optional: serve local catalogue extracts from $(RESDIR)/refcat/ on this
# archive's TAP, for calibration and enrichment without internet (FITS tables
# with the services' own column names):
#   gaia_source*.fits  -> gaiadr3.gaia_source  (ESA gaiadr3.gaia_source columns)
#   simbad_basic*.fits -> localcat.basic       (SIMBAD basic: main_id, ra, dec, otype, pmra, pmdec)
#   vsx*.fits          -> localcat.vsx         (VizieR B/vsx/vsx: Name, RAJ2000, DEJ2000, Type, Period)
#   milliquas*.fits    -> localcat.milliquas   (VizieR VII/294: Name, RAJ2000, DEJ2000, Type, Rmag, z)
# and install a site configuration that points the pipeline at them
# ($(RESDIR)/rapas.toml, read by reduction jobs; see README).
refcat: deploy
	install -d -o gavo -g gavo $(RESDIR)/refcat
	dachs imp rapas/refcat
	dachs imp rapas/localcat
	test -e $(RESDIR)/rapas.toml || install -o gavo -g gavo -m 644 $(REPO)/inputs/rapas/etc/rapas-local.toml $(RESDIR)/rapas.toml
	install -d -o gavo -g gavo /var/gavo/cache/rapas

# Regenerate the committed demo frame (reproducible: fixed seed).
demo-data: venv
	$(PY) -m processing.simulate --out $(REPO)/inputs/rapas/demo

clean:
	rm -rf $(BUILD) .pytest_cache

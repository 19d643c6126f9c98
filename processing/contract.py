"""The contract between the pipeline and the archive: what a reduction
writes, under which names, and how the archive reads it.

- ``obs_id_for``: the frame's archive identifier;
- ``PRODUCTS``: the product files (name, media type, DataLink semantics,
  description), also listed in each ``summary.json`` as ``products``;
- ``SOURCE_COLUMNS``: the source catalogue's columns (name, archive type,
  unit, UCD, description), which the product writers apply and the RD's
  ``rapas.sources`` table is built from (a LOOP over this list);
- ``FLAGS``: the source flag bits;
- ``Summary``: every entry of ``summary.json``.

Standard library only: the archive's DaCHS side runs on Debian's Python
without the pipeline's packages and loads this very file
(``inputs/rapas/res/contract.py`` is a link to it) with
``api.loadPythonModule``.
"""
import json
import os
from dataclasses import MISSING, dataclass, field, fields

LOG_NAME = "rapas.log"
SUMMARY_NAME = "summary.json"
ERROR_NAME = "error.json"


def obs_id_for(checksum_sha256):
    """The archive identifier of a frame: 'rapas-' and the first 16 hex
    digits of the SHA-256 of the submitted file."""
    return "rapas-" + checksum_sha256[:16]


def instrument_key(telescope, instrument, band):
    """'telescope / camera / band' ('unknown' for a missing one): the frames
    that share a colour term (the archive's rapas.instruments)."""
    return " / ".join((value or "").strip() or "unknown" for value in (telescope, instrument, band))


# ---- source flags -------------------------------------------------------------
FLAG_SATURATED = 1       # a pixel in the aperture is at or above SATURATE
FLAG_MASKED = 2          # a pixel in the aperture is masked (NaN, border, cosmic ray)
FLAG_BLENDED = 4         # sep deblended this source from a neighbour
FLAG_EDGE = 8            # aperture or annulus reaches outside the image
FLAG_SKY_POOR = 16       # fewer than half the annulus pixels were usable
FLAG_PSF_FAILED = 32     # PSF fit did not converge or was degenerate
FLAG_SHARP = 64          # sharper than the PSF: a cosmic ray or a hot pixel
FLAG_TRAIL = 128         # on a satellite, aircraft or meteor trail
FLAGS = {
    FLAG_SATURATED: "saturated pixel in aperture",
    FLAG_MASKED: "masked pixel in aperture",
    FLAG_BLENDED: "deblended from a neighbour",
    FLAG_EDGE: "aperture or sky annulus outside the image",
    FLAG_SKY_POOR: "less than half of the sky annulus usable",
    FLAG_PSF_FAILED: "PSF fit failed",
    FLAG_SHARP: "sharper than the PSF (cosmic ray, hot pixel)",
    FLAG_TRAIL: "on a satellite or aircraft trail",
}


# ---- products ---------------------------------------------------------------
@dataclass(frozen=True)
class Product:
    name: str
    media_type: str
    #: DataLink semantics (#this and #preview are the archive's own links)
    semantics: str
    description: str


PRODUCTS = (
    Product("calibrated.fits", "image/fits", "#this",
            "Calibrated image: original pixels, refined WCS, calibration keywords"),
    Product("sources.vot", "application/x-votable+xml", "#derivation", "Source catalogue of this image (VOTable)"),
    Product("sources.fits", "application/fits", "#derivation", "Source catalogue of this image (FITS table)"),
    Product(SUMMARY_NAME, "application/json", "#auxiliary", "Calibration summary (zero point, FWHM, depth)"),
    Product("zeropoint.png", "image/png", "#auxiliary", "Zero-point fit"),
    Product("detections.png", "image/png", "#auxiliary", "Detections and calibrators"),
    Product("fwhm_map.png", "image/png", "#auxiliary", "FWHM and ellipticity across the field"),
    Product("preview.png", "image/png", "#preview", "Preview of the calibrated image"),
    Product("photmodel.fits", "application/fits", "#auxiliary",
            "Photometric model for forced photometry: the ePSF and the calibration maps on a grid"),
    Product(LOG_NAME, "text/plain", "#documentation", "Reduction log"),
)
PRODUCT_NAMES = tuple(p.name for p in PRODUCTS)


def clear_products(out):
    """Remove an earlier run's products and error from the directory
    ``out`` (a ``pathlib.Path``), so that a failure never looks complete.
    Every product is written afresh afterwards, never rewritten in place:
    an ingested directory's files may be the archive's own (hard links,
    ``ingest.py --link``).  The log is replaced by an empty one in one
    rename, not removed: a UWS job lists it as a result before the
    reduction starts, and a client reading it meanwhile must never find it
    missing."""
    for name in set(PRODUCT_NAMES + (ERROR_NAME,)) - {LOG_NAME}:
        (out / name).unlink(missing_ok=True)
    empty = out / (LOG_NAME + ".new")
    empty.open("w").close()
    os.replace(empty, out / LOG_NAME)


def write_error(out, stage, exc):
    """error.json in ``out``: the failed stage, the error's type and its
    one line for the user (the archive's job reads it for its errorSummary)."""
    (out / ERROR_NAME).write_text(json.dumps({"stage": stage, "type": type(exc).__name__, "message": str(exc)}))


def product_manifest():
    """``PRODUCTS`` as summary.json lists them."""
    return [dict(name=p.name, media_type=p.media_type, semantics=p.semantics, description=p.description)
            for p in PRODUCTS]


# ---- source columns -----------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    #: archive (DaCHS/ADQL) type: real, double precision, integer, bigint or text
    type: str
    unit: str                  # VOUnit; '' for none
    ucd: str
    tablehead: str
    #: DaCHS verbLevel (1: shown first ... 30: only on request)
    verb: int
    description: str
    required: bool = False
    #: the value that stands for NULL in a nullable integer column ('' otherwise)
    null: str = ""


def _aperture_columns():
    for k in range(1, 5):
        yield Column(f"mag_ap{k}", "real", "mag", "phot.mag", f"Mag ap{k}", 15,
                     f"Calibrated magnitude in aperture {k} (radii in the image's summary; not corrected to total)")
        yield Column(f"mag_ap{k}_err", "real", "mag", "stat.error;phot.mag", f"Err ap{k}", 15,
                     f"Photometric error of mag_ap{k}")


SOURCE_COLUMNS = (
    Column("source_num", "integer", "", "meta.record", "#", 5, "Running number of the source in its image",
           required=True),
    Column("x_image", "real", "pix", "pos.cartesian.x;instr.det", "x", 15,
           "Windowed centroid x (FITS pixels, first is 1)"),
    Column("y_image", "real", "pix", "pos.cartesian.y;instr.det", "y", 15,
           "Windowed centroid y (FITS pixels, first is 1)"),
    Column("ra", "double precision", "deg", "pos.eq.ra;meta.main", "RA", 1,
           "Right ascension (ICRS) at the observation epoch", required=True),
    Column("dec", "double precision", "deg", "pos.eq.dec;meta.main", "Dec", 1,
           "Declination (ICRS) at the observation epoch", required=True),
    *_aperture_columns(),
    Column("mag_psf", "real", "mag", "phot.mag", "PSF mag", 10,
           "Calibrated PSF magnitude, aperture-corrected to total flux"),
    Column("mag_psf_err", "real", "mag", "stat.error;phot.mag", "PSF err", 10,
           "Measurement error of mag_psf: photon, sky and read noise, the PSF fit's misfit, the error of"
           " the PSF-to-aperture correction and the aperture corrections' star-to-star scatter (the"
           " calibration's error is mag_calib_err)"),
    Column("mag_inst", "real", "mag", "phot.mag;instr", "Inst. mag", 20,
           "Instrumental magnitude -2.5 log10(ADU/s), calibration aperture corrected to total flux"),
    Column("mag_inst_err", "real", "mag", "stat.error;phot.mag;instr", "Inst. err", 20,
           "Error of mag_inst from star to star: photon, sky and read noise and the aperture correction's"
           " scatter (its error common to every source is in the image's zero_point_err)"),
    Column("mag_cal", "real", "mag", "phot.mag;em.opt", "Mag", 1,
           "Calibrated total magnitude in the image's filter (the colour term applied with gaia_bp_rp;"
           " at the calibrators' median BP-RP when gaia_bp_rp is NULL)"),
    Column("mag_cal_err", "real", "mag", "stat.error;phot.mag;em.opt", "Mag err", 1,
           "Measurement error of mag_cal: photon, sky and read noise and the aperture correction's"
           " star-to-star scatter (the calibration's error is mag_calib_err)"),
    Column("mag_calib_err", "real", "mag", "stat.error.sys;phot.mag;em.opt", "Calib err", 5,
           "Calibration error of mag_cal and mag_psf at this source: zero point and colour term, the"
           " calibrators' star-to-star scatter, and the unknown colour when gaia_bp_rp is NULL;"
           " add it in quadrature to mag_cal_err to compare with another catalogue"),
    Column("snr", "real", "", "stat.snr", "S/N", 5, "Signal-to-noise ratio in the calibration aperture"),
    Column("fwhm", "real", "arcsec", "phys.angSize;src", "FWHM", 10, "Full width at half maximum of the source"),
    Column("ellipticity", "real", "", "src.ellipticity", "Ellip.", 15, "1 - b/a from second moments"),
    Column("flags", "integer", "", "meta.code.qual", "Flags", 5,
           "Bit flags: " + "; ".join(f"{bit} {text}" for bit, text in FLAGS.items()), required=True),
    Column("gaia_source_id", "bigint", "", "meta.id.cross", "Gaia DR3", 10,
           "Gaia DR3 source_id of the one-to-one nearest match, NULL if none", null="0"),
    Column("gaia_sep", "real", "arcsec", "pos.angDistance", "Gaia sep", 20, "Distance to the Gaia match"),
    Column("gaia_bp_rp", "real", "mag", "phot.color;em.opt.B;em.opt.R", "BP-RP", 15,
           "Gaia BP-RP colour of the match"),
    Column("simbad_id", "text", "", "meta.id.cross", "SIMBAD", 10,
           "SIMBAD main identifier of the one-to-one match, NULL if none or not queried"),
    Column("simbad_otype", "text", "", "src.class", "SIMBAD type", 15, "SIMBAD object type of the match"),
    Column("vsx_name", "text", "", "meta.id.cross", "VSX", 10, "AAVSO VSX name of the matched variable star"),
    Column("vsx_type", "text", "", "src.class;src.var", "VSX type", 15, "VSX variability type"),
    Column("vsx_period", "double precision", "d", "time.period;src.var", "VSX period", 20, "VSX period"),
    Column("milliquas_name", "text", "", "meta.id.cross", "Milliquas", 10,
           "Milliquas name of the matched quasar or AGN"),
    Column("milliquas_type", "text", "", "src.class", "Milliquas type", 20,
           "Milliquas classification (Q quasar, A AGN, B BL Lac, ...)"),
    Column("milliquas_z", "real", "", "src.redshift", "z", 15, "Milliquas redshift"),
    Column("skybot_name", "text", "", "meta.id.cross", "SkyBoT", 10,
           "Known solar-system body at this position at mid-exposure (SkyBoT)"),
    Column("skybot_class", "text", "", "src.class", "SkyBoT class", 20, "SkyBoT dynamical class of the body"),
    Column("colibri_name", "text", "", "meta.id.cross", "Transient", 10,
           "Astro-COLIBRI transient or alert at this position"),
)


def rd_column_items():
    """The source columns as strings, for the RD's LOOP over them."""
    for c in SOURCE_COLUMNS:
        yield dict(name=c.name, type=c.type, unit=c.unit, ucd=c.ucd, tablehead=c.tablehead,
                   verb=str(c.verb), description=c.description, required=str(c.required), null=c.null)


# ---- summary.json -----------------------------------------------------------
@dataclass
class Summary:
    """Everything ``summary.json`` holds; the archive's image row is read
    from it.  Magnitudes in mag, angles in degrees unless the name says
    arcsec, times MJD (UTC) unless ISO.  NaN (JSON null) where a value could
    not be measured."""
    obs_id: str
    pipeline_version: str
    source_file: str
    checksum_sha256: str
    processed_at: str                     # ISO UTC
    # band and time
    filter: str
    filter_header: str | None
    calibration_band: str | None          # 'Gaia G', 'Gaia BP' or 'Gaia RP'; None if uncalibrated
    em_min: float                         # m
    em_max: float                         # m
    date_obs: str                         # start of exposure, ISO UTC
    mjd_start: float
    mjd_mid: float
    mjd_end: float
    exptime: float                        # s
    # who and where
    telescope: str | None
    instrument: str | None
    observer: str | None
    object: str | None
    gain: float                           # e-/ADU
    rdnoise: float                        # e-
    saturate: float                       # ADU
    airmass: float | None
    # geometry and astrometry
    naxis1: int
    naxis2: int
    pixel_scale_arcsec: float
    ra_center: float
    dec_center: float
    footprint: list                       # [[ra, dec] x 4], counter-clockwise on the sky
    fov_deg: float                        # diameter of the enclosing circle
    wcs_source: str                       # header, refined or solved
    astrometric_rms_arcsec: float
    n_astrometric_stars: int
    #: the refined WCS: 0 shift, scale and rotation, 1 linear, 2+ TAN-SIP order; None: not refined
    wcs_fit_order: int | None
    #: the Bayer colour plane reduced (G, R, B) of a raw mosaic, else None
    colour_plane: str | None
    # image quality and photometry
    fwhm_px: float
    fwhm_arcsec: float
    ellipticity: float
    #: 2: photometrically calibrated; 1: WCS only, calibration_error says why
    calib_level: int
    calibration_error: str | None
    zero_point: float                     # mag = ZP - 2.5 log10(ADU/s) + colour_term * colour, total flux
    zero_point_err: float
    colour_term: float
    colour_term_err: float                # NaN: no colour term fitted (no colours in the catalogue)
    colour_index: str | None              # BP-RP, or None without a colour term
    n_calibrators: int
    calibration_rms: float
    calibration_intrinsic_rms: float      # the star-to-star scatter the fit found beyond the errors
    aperture_radii_arcsec: list
    calibration_radius_arcsec: float
    aperture_correction: float            # calibration aperture to total, at the frame centre
    aperture_correction_err: float
    psf_aperture_correction: float        # PSF flux to the calibration aperture, at the frame centre
    limiting_mag_5sigma: float            # a point source at S/N 5, from the noise at empty positions
    limiting_mag_method: str | None       # 'PSF fits' or 'calibration apertures'
    background_adu: float
    background_rms_adu: float
    n_sources: int
    n_reference_stars: int
    refcat: str
    warnings: list
    # cross-identification (enrich.py)
    enrichment: dict = field(default_factory=dict)
    enrichment_missing: list = field(default_factory=list)
    notable_objects: list = field(default_factory=list)
    site: dict | None = None              # lat, lon (deg), height (m)
    observatory_code: str | None = None
    enriched_at: str | None = None        # ISO UTC, when enrichment was run again
    #: the BP-RP sources without a colour (and forced photometry) are calibrated at: the calibrators' median
    calibration_colour: float | None = None
    #: 'fit', or 'instrument registry (N frames)' when the frame's own was poorly constrained
    colour_term_source: str | None = None
    # the run
    products: list = field(default_factory=product_manifest)
    processing_time_s: float | None = None
    stage_times_s: dict = field(default_factory=dict)      # wall seconds per stage
    stage_cpu_s: dict = field(default_factory=dict)        # CPU seconds per stage

    @classmethod
    def from_dict(cls, values):
        """A summary read back from JSON (one written before ``obs_id`` and
        ``products`` were recorded gets them from the contract)."""
        known = {f.name: f for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values.setdefault("obs_id", obs_id_for(values["checksum_sha256"]))
        values.setdefault("calib_level", 2)       # earlier pipelines wrote calibrated products only
        for name, f in known.items():        # entries added since it was written
            if name not in values and f.default is MISSING and f.default_factory is MISSING:
                values[name] = None
        return cls(**values)

"""``reduce``: the pipeline's one entry point (a path and a config in, a result out)."""
import hashlib
import json
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.time import Time

from . import __version__, aperture, astrometry, calibrate, detect, enrich, psf, refcat
from .config import Config
from .errors import AstrometryError, PipelineError
from .fitsio import load_frame
from .header import fill_airmass, normalise_header
from .logbook import Logbook

LOG_NAME = "rapas.log"
SUMMARY_NAME = "summary.json"
ERROR_NAME = "error.json"
#: S/N in the total-flux aperture for aperture-correction stars: enough stars
#: for a spatial map matters more than the few brightest (they are weighted)
APCOR_MIN_SNR = 30.0
PRODUCT_NAMES = ("calibrated.fits", "sources.vot", "sources.fits", SUMMARY_NAME,
                 "zeropoint.png", "detections.png", "fwhm_map.png", "preview.png")


@dataclass
class Result:
    summary: dict
    sources: Table
    out_dir: Path

    def path(self, name):
        return self.out_dir / name


class InternalError(PipelineError):
    """An unexpected failure; the traceback is in the log."""


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _clear_previous(out):
    """Remove products of an earlier run so a failure never looks complete."""
    for name in PRODUCT_NAMES + (ERROR_NAME, LOG_NAME):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / ".partial", ignore_errors=True)


def reduce(image_path, out_dir, config=None, echo=False):
    """Reduce one FITS frame into ``out_dir``; raise ``PipelineError`` on bad input.

    On failure the log and ``error.json`` (stage, message) are left, and no
    product; on success ``summary.json`` is written last.
    """
    config = config or Config()
    image_path, out = Path(image_path), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    log = Logbook(out / LOG_NAME, echo=echo)
    log(f"RAPAS pipeline {__version__} on {image_path.name}")
    try:
        result = _run(image_path, out, config, log)
    except PipelineError as exc:
        _fail(out, log, exc)
        raise
    except Exception as exc:            # the traceback goes to the log, one line to the user
        log(traceback.format_exc().rstrip())
        wrapped = InternalError(f"internal error in stage {log.stage}: {type(exc).__name__}: {exc}")
        _fail(out, log, wrapped)
        raise wrapped from exc
    log.close()
    summary_path = out / SUMMARY_NAME
    result.summary["processing_time_s"] = round(log.elapsed, 3)
    result.summary["stage_times_s"] = {k: round(v, 3) for k, v in log.timings.items()}
    tmp = out / (SUMMARY_NAME + ".tmp")
    tmp.write_text(json.dumps(result.summary, indent=1, default=_json_default))
    tmp.replace(summary_path)
    return result


def _fail(out, log, exc):
    log(f"ERROR: {exc}")
    log.close()
    shutil.rmtree(out / ".partial", ignore_errors=True)
    (out / ERROR_NAME).write_text(json.dumps({"stage": getattr(exc, "stage", "pipeline"),
                                              "type": type(exc).__name__, "message": str(exc)}))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass
class Detections:
    """What the detection stage found, and the images and masks it used."""
    data_sub: np.ndarray           # background-subtracted pixels (ADU)
    background: detect.Background
    bad: np.ndarray                # never used: NaN, border, cosmic rays
    saturated: np.ndarray
    objs: np.ndarray               # sep's catalogue
    point_like: np.ndarray
    peak: np.ndarray               # peak pixel value above zero (ADU), for saturation tests
    sep_flags: np.ndarray


@dataclass
class Photometry:
    """Aperture (and PSF) photometry of every source, instrumental."""
    x: np.ndarray                  # windowed centroids, 0-based pixels
    y: np.ndarray
    fwhm: float                    # pixels
    radii: list                    # the four reported aperture radii (px)
    r_cal: float
    r_total: float                 # the "total flux" aperture
    inst: dict                     # radius -> (mag, err), -2.5 log10(ADU/s)
    snr: np.ndarray                # in the calibration aperture
    flags: np.ndarray
    m_inst: np.ndarray             # calibration aperture corrected to total
    e_inst: np.ndarray
    apcor: float                   # at the frame centre
    apcor_err: float
    exclude: np.ndarray            # pixels no sky or limit measurement may use
    sky_level: np.ndarray
    m_psf: np.ndarray | None = None
    e_psf: np.ndarray | None = None
    apcor_psf: float = np.nan


def _run(image_path, out, config, log):
    log.begin("load")
    checksum = sha256(image_path)
    frame = load_frame(image_path)
    for note in frame.notes:
        log(note)
    shape = frame.data.shape
    log(f"image {shape[1]}x{shape[0]} from HDU {frame.hdu_index}, {int(frame.mask.sum())} non-finite pixels")

    log.begin("header")
    warnings_out = []
    info = normalise_header(frame.header, frame.data, frame.integer_max, config, warnings_out)
    for w in warnings_out:
        log(f"warning: {w}")
    log(f"band {info.band.name} (from {info.filter_raw!r}), exptime {info.exptime:g} s,"
        f" start {info.date_obs.isot}, gain {info.gain:g}, read noise {info.rdnoise:g}, saturation {info.saturate:g}")

    header_wcs, wcs_problem = astrometry.header_wcs(frame.header, shape)
    det = _detect(frame, info, config, log)
    seeing_px = config.seeing_arcsec / astrometry.pixel_scale_arcsec(header_wcs) if header_wcs else None
    fwhm0 = detect.initial_fwhm(det.objs, det.point_like, seeing_px)
    log(f"{len(det.objs)} sources above {config.detect_sigma:g} sigma, first FWHM estimate {fwhm0:.2f} px")
    epsf, fwhm, psf_idx = _psf_model(det, fwhm0, info, shape, warnings_out, log)
    x, y = detect.windowed_positions(det.data_sub, det.objs["x"], det.objs["y"], fwhm, det.bad)

    wcs, wcs_source = _initial_wcs(header_wcs, wcs_problem, det, x, y, frame.header, info, config, log)
    centre = astrometry.frame_centre(wcs, shape)
    fill_airmass(info, centre)
    ref = _reference_stars(wcs, centre, shape, info, config, log)
    wcs, wcs_source, astrom_rms, n_astrom = _refine_wcs(wcs, wcs_source, det, x, y, fwhm, ref, info, config,
                                                        warnings_out, log)
    scale = astrometry.pixel_scale_arcsec(wcs)
    ra, dec = wcs.all_pix2world(x, y, 0)

    phot = _aperture_photometry(det, x, y, fwhm, info, config, shape, log)
    if config.psf_photometry and epsf is not None:
        _psf_photometry(phot, det, epsf, info, shape, log)

    log.begin("calibration")
    cal = calibrate.calibrate(x, y, ra, dec, phot.m_inst, phot.e_inst, phot.flags, ref, info.band, config,
                              max(1.0, 0.6 * fwhm * scale), shape, log)
    sources = _source_table(phot, det, cal, ref, ra, dec, psf_idx, scale)
    site = None if info.site is None else (float(info.site.lat.deg), float(info.site.lon.deg),
                                           float(info.site.height.to_value("m")))
    field = enrich.Field(ra=centre.ra.deg, dec=centre.dec.deg, radius_deg=astrometry.field_radius_deg(wcs, shape),
                         time_mid=info.time_mid, astrometric_rms_arcsec=astrom_rms, site=site,
                         observatory_code=config.observatory_code)
    enrichment = enrich_sources(sources, field, config, log)

    log.begin("limits")
    lim, sigma_ap = calibrate.limiting_magnitude(det.data_sub, phot.exclude, phot.r_cal, info.exptime,
                                                 cal.zero_point, phot.apcor)
    log(f"5-sigma limiting magnitude {lim:.3f} ({info.band.name}), aperture noise {sigma_ap:.2f} ADU")

    log.begin("products")
    ellipticity = np.asarray(sources["ellipticity"])
    summary = _summary(
        image_path, checksum, info, cal, phot, det, wcs, wcs_source, shape, centre, scale,
        astrom_rms, n_astrom, lim, len(sources), len(ref), config, warnings_out,
        float(np.median(ellipticity[psf_idx] if len(psf_idx) else ellipticity)))
    summary.update(enrichment)
    _write_products(out, frame, wcs, summary, sources, cal, det.data_sub, log)
    log(f"done: {len(sources)} sources, ZP {cal.zero_point:.4f}, limit {lim:.2f}, FWHM {fwhm * scale:.2f} arcsec")
    return Result(summary=summary, sources=sources, out_dir=out)


def enrich_sources(sources, field, config, log):
    """Fill the sources' cross-identification columns; returns the summary's
    enrichment entries (outcome per service, missing services, notable objects)."""
    log.begin("enrichment")
    columns, notable, outcomes = enrich.enrich(sources["ra"], sources["dec"], field, config, log)
    for name, values in columns.items():
        sources[name] = values.astype(str) if values.dtype == object else values
    status, missing = enrich.outcome_summary(outcomes)
    site = dict(zip(("lat", "lon", "height"), field.site)) if field.site else None
    return dict(enrichment=status, enrichment_missing=missing, notable_objects=notable,
                site=site, observatory_code=field.observatory_code)


def _detect(frame, info, config, log):
    """Masks, background (sources masked) and sep detection."""
    log.begin("background")
    bad, saturated = detect.build_masks(frame.data, frame.mask, info.saturate, config.border_px,
                                        config.cosmic_rays, info.gain, info.rdnoise)
    background = detect.estimate_background(frame.data, bad)
    data_sub = frame.data - background.level
    log(f"background median {np.median(background.level):.2f} ADU, rms {background.global_rms:.3f} ADU")
    log.begin("detection")
    objs = detect.detect_sources(data_sub, background, bad, config.detect_sigma, info.gain)
    h, w = frame.data.shape
    iy = np.clip(np.round(objs["y"]).astype(int), 0, h - 1)
    ix = np.clip(np.round(objs["x"]).astype(int), 0, w - 1)
    return Detections(
        data_sub=data_sub, background=background, bad=bad, saturated=saturated, objs=objs,
        point_like=detect.stellar(objs), peak=objs["peak"] + background.level[iy, ix],
        sep_flags=np.where(objs["flag"] & 1, detect.FLAG_BLENDED, 0).astype(np.int32))   # sep OBJ_MERGED


def _psf_model(det, fwhm0, info, shape, warnings_out, log):
    """ePSF from isolated unsaturated stars and the FWHM measured on it."""
    log.begin("psf-model")
    x, y = np.asarray(det.objs["x"]), np.asarray(det.objs["y"])
    psf_idx = psf.select_psf_stars(x, y, det.objs["flux"], det.peak, det.point_like, fwhm0, info.saturate, shape)
    if len(psf_idx) < 5:
        warnings_out.append(f"only {len(psf_idx)} isolated unsaturated stars: no PSF model, FWHM from moments")
        log(f"warning: {warnings_out[-1]}")
        return None, fwhm0, psf_idx
    epsf = psf.build_epsf(det.data_sub, x[psf_idx], y[psf_idx], fwhm0)
    fwhm = psf.epsf_fwhm(epsf)
    log(f"ePSF from {len(psf_idx)} stars, FWHM {fwhm:.3f} px")
    return epsf, fwhm, psf_idx


def _initial_wcs(wcs, problem, det, x, y, header, info, config, log):
    """The header's WCS, or a blind Astrometry.net solution; (wcs, source)."""
    log.begin("astrometry")
    if wcs is not None and config.plate_solve != "always":
        return wcs, "header"
    if config.plate_solve == "never":
        raise AstrometryError(f"{problem} and plate solving is disabled")
    log(problem or "plate solving forced")
    objs = det.objs
    fluxerr = detect.flux_error(objs, det.background, info.gain)
    shape = det.data_sub.shape
    solved = astrometry.solve_blind(Table(dict(x=x, y=y, flux=objs["flux"], fluxerr=fluxerr)),
                                    shape, header, config, log)
    centre = astrometry.frame_centre(solved, shape)
    log(f"solved: centre RA {centre.ra.deg:.5f} Dec {centre.dec.deg:.5f},"
        f" {astrometry.pixel_scale_arcsec(solved):.3f} arcsec/px")
    return solved, "solved"


def _reference_stars(wcs, centre, shape, info, config, log):
    """Reference catalogue over the field, moved to mid-exposure."""
    log.begin("refcat")
    radius = astrometry.field_radius_deg(wcs, shape) * 1.05 + 30.0 / 3600
    ref = refcat.load_reference(config.refcat, centre.ra.deg, centre.dec.deg, radius, config.max_calib_mag + 1.0,
                                config.cache_dir)
    log(f"{len(ref)} reference stars within {radius:.3f} deg ({config.refcat.get('kind')})")
    return refcat.at_epoch(ref, info.time_mid.jyear)


def _refine_wcs(wcs, wcs_source, det, x, y, fwhm, ref, info, config, warnings_out, log):
    """Refine on the brightest clean stars; keep a header WCS (with a
    warning) when refinement is impossible.  (wcs, source, rms, n)."""
    log.begin("refinement")
    if len(ref) < 10:
        warnings_out.append(f"only {len(ref)} reference stars: WCS not refined")
        log(f"warning: {warnings_out[-1]}")
        return wcs, wcs_source, np.nan, 0
    bright = np.argsort(-det.objs["flux"])
    clean = bright[(det.objs["flag"][bright] == 0) & (det.peak[bright] < info.saturate)][:1500]
    try:
        refined, rms, n = astrometry.refine(wcs, x[clean], y[clean], ref, fwhm, config.sip_order, log)
    except AstrometryError as exc:
        if wcs_source == "solved":
            raise
        warnings_out.append(f"WCS kept from header: {exc}")
        log(f"warning: {warnings_out[-1]}")
        return wcs, wcs_source, np.nan, 0
    return refined, "refined" if wcs_source == "header" else "solved", rms, n


def _aperture_photometry(det, x, y, fwhm, info, config, shape, log):
    """Apertures with a local sky annulus; the calibration aperture is
    corrected to total flux by a spatial map measured on bright isolated stars."""
    import sep_x as sep
    log.begin("photometry")
    radii = [r * fwhm for r in config.aperture_radii_fwhm]
    r_cal = config.calibration_radius_fwhm * fwhm
    r_total = config.total_radius_fwhm * fwhm
    objs = det.objs
    footprints = np.zeros(shape, dtype=bool)
    sep.mask_ellipse(footprints, objs["x"], objs["y"], objs["a"], objs["b"], objs["theta"], r=3.0 * 2.5)
    exclude = det.bad | footprints | det.saturated
    sky, n_annulus = aperture.local_sky(det.data_sub, x, y, config.sky_annulus_fwhm[0] * fwhm,
                                        config.sky_annulus_fwhm[1] * fwhm, exclude)
    fluxes, ap_flags = aperture.measure(det.data_sub, x, y, radii + [r_cal, r_total], det.background.rms,
                                        info.gain, det.bad, det.saturated, sky, n_annulus)
    flags = ap_flags | det.sep_flags
    inst = {r: aperture.instrumental_mag(*fluxes[r], info.exptime) for r in fluxes}
    (m_cal, e_cal), (m_total, e_total) = inst[r_cal], inst[r_total]
    # stars for the correction: point-like, unflagged, alone within the big
    # aperture and measured in it (its sky noise dominates the correction's
    # error; the fit weights each star by it)
    use = (det.point_like & (flags == 0) & detect.isolated(x, y, r_total + fwhm)
           & (fluxes[r_total][0] / fluxes[r_total][1] > APCOR_MIN_SNR))
    err = np.hypot(e_total, e_cal)
    correction, correction_err, order, n_used = aperture.aperture_correction_map(
        m_cal, m_total, err, use, x, y, shape)
    centre = ([0.5 * (shape[1] - 1)], [0.5 * (shape[0] - 1)])
    apcor, apcor_err = float(correction(*centre)[0]), float(correction_err(*centre)[0])
    log(f"apertures {', '.join(f'{r:.2f}' for r in radii)} px; calibration aperture {r_cal:.2f} px,"
        f" aperture correction to {r_total:.1f} px at the centre {apcor:+.4f} +/- {apcor_err:.4f} mag"
        f" (order-{order} map from {n_used} stars)")
    return Photometry(x=x, y=y, fwhm=fwhm, radii=radii, r_cal=r_cal, r_total=r_total, inst=inst,
                      snr=fluxes[r_cal][0] / fluxes[r_cal][1], flags=flags,
                      m_inst=m_cal + correction(x, y), e_inst=e_cal, apcor=apcor, apcor_err=apcor_err,
                      exclude=exclude, sky_level=sky.level)


def _psf_photometry(phot, det, epsf, info, shape, log):
    """PSF magnitudes tied to the calibration aperture by a spatial map
    (one ePSF for a PSF that varies across the field), then to total flux."""
    log.begin("psf-fit")
    x, y = phot.x, phot.y
    flux, flux_err, ok = psf.fit_fluxes(det.data_sub, det.background.rms, info.gain, epsf, x, y,
                                        1.5 * phot.fwhm, det.bad, phot.sky_level)
    m_raw, e_psf = aperture.instrumental_mag(flux, flux_err, info.exptime)
    m_cal, e_cal = phot.inst[phot.r_cal]
    use = det.point_like & ok & (phot.flags == 0) & (phot.snr > 50)
    correction, _, order, n_used = aperture.aperture_correction_map(m_raw, m_cal, np.hypot(e_psf, e_cal),
                                                                    use, x, y, shape)
    to_aperture = correction(x, y)
    phot.apcor_psf = float(np.median(to_aperture[use])) if n_used else np.nan
    phot.m_psf = np.where(ok, m_raw + to_aperture + (phot.m_inst - m_cal), np.nan)
    phot.e_psf = e_psf
    phot.flags |= np.where(ok, 0, detect.FLAG_PSF_FAILED).astype(np.int32)
    log(f"PSF fit of {len(x)} sources, {int(ok.sum())} good; PSF-to-aperture correction"
        f" {phot.apcor_psf:+.4f} mag (median; order-{order} map from {n_used} stars)")


def _source_table(phot, det, cal, ref, ra, dec, psf_idx, scale):
    """The source catalogue: calibrated magnitudes with the zero-point error."""
    import sep_x as sep
    x, y, n = phot.x, phot.y, len(phot.x)
    colour = np.full(n, np.nan)
    gaia_id = np.zeros(n, dtype=np.int64)
    gaia_sep = np.full(n, np.nan)
    _gaia_crossmatch(ra, dec, ref, max(1.0, 0.6 * phot.fwhm * scale), colour, gaia_id, gaia_sep)
    offset = cal.zero_at(x, y) + cal.colour_term * np.where(np.isfinite(colour), colour, cal.median_colour)
    zp_err = cal.zero_err_at(x, y)
    flux_radius, _ = sep.flux_radius(det.data_sub, x, y, np.full(n, phot.r_total), 0.5, mask=det.bad, subpix=5)
    r50_psf = np.median(flux_radius[psf_idx]) if len(psf_idx) else np.median(flux_radius)
    sources = Table()
    sources["source_num"] = np.arange(1, n + 1, dtype=np.int32)
    sources["x_image"], sources["y_image"] = x + 1.0, y + 1.0
    sources["ra"], sources["dec"] = ra, dec
    for k, r in enumerate(phot.radii, start=1):
        m_k, e_k = phot.inst[r]
        sources[f"mag_ap{k}"] = m_k + offset
        sources[f"mag_ap{k}_err"] = e_k
    no_psf = np.full(n, np.nan)
    sources["mag_psf"] = phot.m_psf + offset if phot.m_psf is not None else no_psf
    sources["mag_psf_err"] = np.hypot(phot.e_psf, zp_err) if phot.e_psf is not None else no_psf
    sources["mag_inst"], sources["mag_inst_err"] = phot.m_inst, phot.e_inst
    sources["mag_cal"] = phot.m_inst + offset
    sources["mag_cal_err"] = np.hypot(phot.e_inst, zp_err)
    sources["snr"] = phot.snr
    sources["fwhm"] = phot.fwhm * flux_radius / r50_psf * scale
    sources["ellipticity"] = 1.0 - det.objs["b"] / det.objs["a"]
    sources["flags"] = phot.flags
    sources["gaia_source_id"] = gaia_id
    sources["gaia_sep"] = gaia_sep
    sources["gaia_bp_rp"] = colour
    return sources


def _summary(image_path, checksum, info, cal, phot, det, wcs, wcs_source, shape, centre, scale,
             astrom_rms, n_astrom, lim, n_sources, n_ref, config, warnings_out, ellipticity):
    t_start = info.date_obs
    return dict(
        pipeline_version=__version__, source_file=image_path.name, checksum_sha256=checksum,
        processed_at=Time.now().isot + "Z",
        filter=info.band.name, filter_header=info.filter_raw, calibration_band=f"Gaia {cal.reference_band}",
        em_min=info.band.em_min, em_max=info.band.em_max,
        date_obs=t_start.isot, mjd_start=float(t_start.mjd), mjd_mid=info.mjd_mid,
        mjd_end=float(t_start.mjd + info.exptime / 86400.0), exptime=info.exptime,
        telescope=info.telescope, instrument=info.instrument, observer=info.observer, object=info.object,
        gain=info.gain, rdnoise=info.rdnoise, saturate=info.saturate, airmass=info.airmass,
        naxis1=shape[1], naxis2=shape[0], pixel_scale_arcsec=scale,
        ra_center=float(centre.ra.deg), dec_center=float(centre.dec.deg),
        footprint=astrometry.footprint(wcs, shape).tolist(),
        fov_deg=2 * astrometry.field_radius_deg(wcs, shape),
        wcs_source=wcs_source, astrometric_rms_arcsec=astrom_rms, n_astrometric_stars=n_astrom,
        fwhm_px=phot.fwhm, fwhm_arcsec=phot.fwhm * scale, ellipticity=ellipticity,
        # the total-flux zero point carries the aperture correction's error too
        zero_point=cal.zero_point, zero_point_err=float(np.hypot(cal.zero_point_err, phot.apcor_err)),
        colour_term=cal.colour_term, colour_term_err=cal.colour_term_err, colour_index="BP-RP",
        n_calibrators=cal.n_calibrators, calibration_rms=cal.rms,
        aperture_radii_arcsec=[r * scale for r in phot.radii], calibration_radius_arcsec=phot.r_cal * scale,
        aperture_correction=phot.apcor, aperture_correction_err=phot.apcor_err,
        psf_aperture_correction=phot.apcor_psf,
        limiting_mag_5sigma=lim, background_adu=float(np.median(det.background.level)),
        background_rms_adu=det.background.global_rms,
        n_sources=n_sources, n_reference_stars=n_ref, refcat=config.refcat.get("kind"),
        warnings=list(warnings_out),
    )


def _write_products(out, frame, wcs, summary, sources, cal, data_sub, log):
    """Everything into out/.partial first, then moved into place."""
    from . import products
    partial = out / ".partial"
    partial.mkdir()
    products.write_all(partial, frame, wcs, summary, sources, cal, data_sub, log)
    for item in partial.iterdir():
        item.replace(out / item.name)
    partial.rmdir()


def _gaia_crossmatch(ra, dec, ref, radius_arcsec, colour, gaia_id, gaia_sep):
    """Nearest one-to-one Gaia match within ``radius_arcsec`` (fills the arrays)."""
    oidx, cidx, dist = astrometry.nearest_match(ra, dec, ref["ra"], ref["dec"], radius_arcsec)
    colour[oidx] = np.asarray(ref["phot_bp_mean_mag"] - ref["phot_rp_mean_mag"])[cidx]
    gaia_id[oidx] = np.asarray(ref["source_id"])[cidx]
    gaia_sep[oidx] = dist

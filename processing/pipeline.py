"""``reduce``: the pipeline's one entry point (a path and a config in, a result out)."""
import hashlib
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.time import Time

from . import __version__, aperture, astrometry, calibrate, detect, psf, refcat
from .config import Config
from .errors import AstrometryError, PipelineError
from .fitsio import load_frame
from .header import fill_airmass, normalise_header
from .logbook import Logbook

LOG_NAME = "rapas.log"
SUMMARY_NAME = "summary.json"
ERROR_NAME = "error.json"
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
    import json
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
    import json
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


def _run(image_path, out, config, log):
    from . import products

    log.begin("load")
    checksum = sha256(image_path)
    frame = load_frame(image_path)
    shape = frame.data.shape
    for note in frame.notes:
        log(note)
    log(f"image {shape[1]}x{shape[0]} from HDU {frame.hdu_index}, {int(frame.mask.sum())} non-finite pixels")

    log.begin("header")
    warnings_out = []
    info = normalise_header(frame.header, frame.data, frame.integer_max, config, warnings_out)
    for w in warnings_out:
        log(f"warning: {w}")
    log(f"band {info.band.name} (from {info.filter_raw!r}), exptime {info.exptime:g} s,"
        f" start {info.date_obs.isot}, gain {info.gain:g}, read noise {info.rdnoise:g}, saturation {info.saturate:g}")

    log.begin("background")
    bad, saturated = detect.build_masks(frame.data, frame.mask, info.saturate, config.border_px,
                                        config.cosmic_rays, info.gain, info.rdnoise)
    bkg = detect.estimate_background(frame.data, bad)
    data_sub = frame.data - bkg.level
    log(f"background median {np.median(bkg.level):.2f} ADU, rms {bkg.global_rms:.3f} ADU")

    log.begin("detection")
    objs = detect.detect_sources(data_sub, bkg, bad, config.detect_sigma, info.gain)
    point_like = detect.stellar(objs)
    fwhm0 = detect.initial_fwhm(objs, point_like)
    x, y = np.asarray(objs["x"]), np.asarray(objs["y"])     # windowed after the PSF is known
    sep_flags = np.where(objs["flag"] & 1, detect.FLAG_BLENDED, 0).astype(np.int32)  # sep OBJ_MERGED
    log(f"{len(objs)} sources above {config.detect_sigma:g} sigma, first FWHM estimate {fwhm0:.2f} px")

    log.begin("psf-model")
    peak_sat = objs["peak"] + bkg.level[np.clip(np.round(y).astype(int), 0, shape[0] - 1),
                                        np.clip(np.round(x).astype(int), 0, shape[1] - 1)]
    psf_idx = psf.select_psf_stars(x, y, objs["flux"], peak_sat, point_like, fwhm0, info.saturate, shape)
    epsf = None
    if len(psf_idx) >= 5:
        epsf = psf.build_epsf(data_sub, x[psf_idx], y[psf_idx], fwhm0)
        fwhm = psf.epsf_fwhm(epsf)
        log(f"ePSF from {len(psf_idx)} stars, FWHM {fwhm:.3f} px")
    else:
        fwhm = fwhm0
        warnings_out.append(f"only {len(psf_idx)} isolated unsaturated stars: no PSF model, FWHM from moments")
        log(f"warning: {warnings_out[-1]}")
    x, y = detect.windowed_positions(data_sub, objs["x"], objs["y"], fwhm, bad)

    log.begin("astrometry")
    wcs, reason = astrometry.header_wcs(frame.header, shape)
    wcs_source = "header"
    if wcs is None or config.plate_solve == "always":
        if config.plate_solve == "never":
            raise AstrometryError(f"{reason} and plate solving is disabled")
        log(reason or "plate solving forced")
        fluxerr = np.sqrt(np.abs(objs["flux"]) / info.gain + objs["npix"] * bkg.global_rms ** 2)
        wcs = astrometry.solve_blind(Table(dict(x=x, y=y, flux=objs["flux"], fluxerr=fluxerr)),
                                     shape, frame.header, config, log)
        wcs_source = "solved"
        solved_centre = wcs.pixel_to_world(0.5 * (shape[1] - 1), 0.5 * (shape[0] - 1))
        log(f"solved: centre RA {solved_centre.ra.deg:.5f} Dec {solved_centre.dec.deg:.5f},"
            f" {astrometry.pixel_scale_arcsec(wcs):.3f} arcsec/px")
    scale = astrometry.pixel_scale_arcsec(wcs)
    centre = wcs.pixel_to_world(0.5 * (shape[1] - 1), 0.5 * (shape[0] - 1))
    fill_airmass(info, centre)

    log.begin("refcat")
    radius = astrometry.field_radius_deg(wcs, shape) * 1.05 + 30.0 / 3600
    ref = refcat.load_reference(config.refcat, centre.ra.deg, centre.dec.deg, radius, config.max_calib_mag + 1.0)
    ref = refcat.at_epoch(ref, info.time_mid.jyear)
    log(f"{len(ref)} reference stars within {radius:.3f} deg ({config.refcat.get('kind')})")

    log.begin("refinement")
    bright = np.argsort(-objs["flux"])
    clean = bright[(objs["flag"][bright] == 0) & (peak_sat[bright] < info.saturate)][:1500]
    astrom_rms, n_astrom = np.nan, 0
    if len(ref) >= 10:
        try:
            wcs, astrom_rms, n_astrom = astrometry.refine(wcs, x[clean], y[clean], ref, fwhm,
                                                          config.sip_order, log)
            wcs_source = "refined" if wcs_source == "header" else "solved"
        except AstrometryError as exc:
            if wcs_source == "solved":
                raise
            warnings_out.append(f"WCS kept from header: {exc}")
            log(f"warning: {warnings_out[-1]}")
    else:
        warnings_out.append(f"only {len(ref)} reference stars: WCS not refined")
        log(f"warning: {warnings_out[-1]}")
    ra, dec = wcs.all_pix2world(x, y, 0)

    log.begin("photometry")
    radii = [r * fwhm for r in config.aperture_radii_fwhm]
    r_cal = config.calibration_radius_fwhm * fwhm
    r_total = config.total_radius_fwhm * fwhm
    src_mask = np.zeros(shape, dtype=bool)
    import sep_x as sep
    sep.mask_ellipse(src_mask, objs["x"], objs["y"], objs["a"], objs["b"], objs["theta"], r=3.0 * 2.5)
    exclude = bad | src_mask | saturated
    sky, n_ann = aperture.local_sky(data_sub, x, y, config.sky_annulus_fwhm[0] * fwhm,
                                    config.sky_annulus_fwhm[1] * fwhm, exclude)
    fluxes, ap_flags = aperture.measure(data_sub, x, y, radii + [r_cal, r_total], bkg.rms, info.gain,
                                        bad, saturated, sky, n_ann)
    flags = ap_flags | sep_flags
    inst = {r: aperture.instrumental_mag(*fluxes[r], info.exptime) for r in fluxes}
    m_cal, e_cal = inst[r_cal]
    snr_cal = fluxes[r_cal][0] / fluxes[r_cal][1]
    m_total, e_total = inst[r_total]
    # aperture-correction stars: point-like, unflagged, alone within the big
    # aperture and bright in it (its sky noise dominates the correction's error)
    apcor_stars = (point_like & (flags == 0) & detect.isolated(x, y, r_total + fwhm)
                   & (fluxes[r_total][0] / fluxes[r_total][1] > 100))
    apcor_fn, apcor_order, n_apcor = aperture.aperture_correction_map(
        m_cal, m_total, np.hypot(e_total, e_cal), apcor_stars, x, y, shape)
    apcor_xy = apcor_fn(x, y)
    apcor = float(apcor_fn([0.5 * (shape[1] - 1)], [0.5 * (shape[0] - 1)])[0])
    _, apcor_err, _ = aperture.aperture_correction(m_cal, m_total, np.hypot(e_total, e_cal), apcor_stars)
    log(f"apertures {', '.join(f'{r:.2f}' for r in radii)} px; calibration aperture {r_cal:.2f} px,"
        f" aperture correction to {r_total:.1f} px at the centre {apcor:+.4f} +/- {apcor_err:.4f} mag"
        f" (order-{apcor_order} map from {n_apcor} stars)")
    m_inst, e_inst = m_cal + apcor_xy, e_cal

    m_psf = e_psf = None
    apcor_psf = np.nan
    if config.psf_photometry and epsf is not None:
        log.begin("psf-fit")
        f_psf, ef_psf, ok_psf = psf.fit_fluxes(data_sub, bkg.rms, info.gain, epsf, x, y, 1.5 * fwhm, bad, sky.level)
        m_psf_raw, e_psf = aperture.instrumental_mag(f_psf, ef_psf, info.exptime)
        psf_ref = point_like & ok_psf & (flags == 0) & (snr_cal > 50)
        psf_fn, psf_order, n_psf_ref = aperture.aperture_correction_map(
            m_psf_raw, m_cal, np.hypot(e_psf, e_cal), psf_ref, x, y, shape)
        apcor_psf_xy = psf_fn(x, y)
        apcor_psf = float(np.median(apcor_psf_xy[psf_ref])) if n_psf_ref else np.nan
        m_psf = np.where(ok_psf, m_psf_raw + apcor_psf_xy + apcor_xy, np.nan)
        flags |= np.where(ok_psf, 0, detect.FLAG_PSF_FAILED).astype(np.int32)
        log(f"PSF fit of {len(x)} sources, {int(ok_psf.sum())} good; PSF-to-aperture correction {apcor_psf:+.4f} mag"
            f" (median; order-{psf_order} map from {n_psf_ref} stars)")

    log.begin("calibration")
    match_radius = max(1.0, 0.6 * fwhm * scale)
    cal = calibrate.calibrate(x, y, ra, dec, m_inst, e_inst, flags, ref, info.band, config,
                              match_radius, shape, log)
    zp_xy = cal.zero_at(x, y)
    zp_err_xy = cal.zero_err_at(x, y)
    colour = np.full(len(x), np.nan)
    gaia_id = np.zeros(len(x), dtype=np.int64)
    gaia_sep = np.full(len(x), np.nan)
    _gaia_crossmatch(ra, dec, ref, max(1.0, 0.6 * fwhm * scale), colour, gaia_id, gaia_sep)
    colour_used = np.where(np.isfinite(colour), colour, cal.median_colour)
    offset = zp_xy + cal.colour_term * colour_used
    mag = m_inst + offset
    mag_err = np.hypot(e_inst, zp_err_xy)

    log.begin("limits")
    lim, sigma_ap = calibrate.limiting_magnitude(data_sub, exclude, r_cal, info.exptime, cal.zero_point, apcor)
    log(f"5-sigma limiting magnitude {lim:.3f} ({info.band.name}), aperture noise {sigma_ap:.2f} ADU")

    log.begin("products")
    flux_radius, _ = sep.flux_radius(data_sub, x, y, np.full(len(x), r_total), 0.5, mask=bad, subpix=5)
    r50_ref = np.median(flux_radius[psf_idx]) if len(psf_idx) else np.median(flux_radius)
    sources = Table()
    sources["source_num"] = np.arange(1, len(x) + 1, dtype=np.int32)
    sources["x_image"], sources["y_image"] = x + 1.0, y + 1.0
    sources["ra"], sources["dec"] = ra, dec
    for k, r in enumerate(radii, start=1):
        m_k, e_k = inst[r]
        sources[f"mag_ap{k}"] = m_k + offset
        sources[f"mag_ap{k}_err"] = e_k
    sources["mag_psf"] = m_psf + offset if m_psf is not None else np.full(len(x), np.nan)
    sources["mag_psf_err"] = np.hypot(e_psf, zp_err_xy) if e_psf is not None else np.full(len(x), np.nan)
    sources["mag_inst"], sources["mag_inst_err"] = m_inst, e_inst
    sources["mag_cal"], sources["mag_cal_err"] = mag, mag_err
    sources["snr"] = snr_cal
    sources["fwhm"] = fwhm * flux_radius / r50_ref * scale
    sources["ellipticity"] = 1.0 - objs["b"] / objs["a"]
    sources["flags"] = flags
    sources["gaia_source_id"] = gaia_id
    sources["gaia_sep"] = gaia_sep
    sources["gaia_bp_rp"] = colour

    ellip = float(np.median(sources["ellipticity"][psf_idx])) if len(psf_idx) else float(np.median(sources["ellipticity"]))
    t_start = info.date_obs
    summary = dict(
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
        fwhm_px=fwhm, fwhm_arcsec=fwhm * scale, ellipticity=ellip,
        zero_point=cal.zero_point, zero_point_err=cal.zero_point_err,
        colour_term=cal.colour_term, colour_term_err=cal.colour_term_err, colour_index="BP-RP",
        n_calibrators=cal.n_calibrators, calibration_rms=cal.rms,
        aperture_radii_arcsec=[r * scale for r in radii], calibration_radius_arcsec=r_cal * scale,
        aperture_correction=apcor, aperture_correction_err=apcor_err, psf_aperture_correction=apcor_psf,
        limiting_mag_5sigma=lim, background_adu=float(np.median(bkg.level)), background_rms_adu=bkg.global_rms,
        n_sources=len(sources), n_reference_stars=len(ref), refcat=config.refcat.get("kind"),
        warnings=list(warnings_out),
    )
    partial = out / ".partial"
    partial.mkdir()
    products.write_all(partial, frame, wcs, summary, sources, cal, data_sub, log)
    for item in partial.iterdir():
        item.replace(out / item.name)
    partial.rmdir()
    log(f"done: {len(sources)} sources, ZP {cal.zero_point:.4f}, limit {lim:.2f}, FWHM {fwhm * scale:.2f} arcsec")
    return Result(summary=summary, sources=sources, out_dir=out)


def _gaia_crossmatch(ra, dec, ref, radius_arcsec, colour, gaia_id, gaia_sep):
    """Nearest one-to-one Gaia match within ``radius_arcsec`` (fills the arrays)."""
    oidx, cidx, dist = astrometry.nearest_match(ra, dec, ref["ra"], ref["dec"], radius_arcsec)
    colour[oidx] = np.asarray(ref["phot_bp_mean_mag"] - ref["phot_rp_mean_mag"])[cidx]
    gaia_id[oidx] = np.asarray(ref["source_id"])[cidx]
    gaia_sep[oidx] = dist

"""The reduction's stages, each a function of the ``Reduction`` context.

A stage reads what earlier stages left on the context, calls the science
modules (detect, psf, astrometry, aperture, calibrate, ...) and leaves its
own result there.  The order is ``pipeline.STAGES``.
"""
import hashlib

import numpy as np
from astropy.table import Table
from astropy.time import Time

from . import __version__, aperture, astrometry, calibrate, crossmatch, detect, enrich, hints, psf, refcat
from .contract import FLAG_PSF_FAILED, Summary, obs_id_for, product_manifest
from .errors import AstrometryError, CalibrationError, CatalogueError
from .fitsio import load_frame
from .header import fill_airmass, normalise_header


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(r):
    """The frame's pixels and header (overscan removed, trimmed) and its checksum."""
    r.checksum = sha256(r.image_path)
    r.frame = load_frame(r.image_path, r.config.colour_plane)
    for note in r.frame.notes:
        r.log(note)
    h, w = r.frame.data.shape
    r.log(f"image {w}x{h} from HDU {r.frame.hdu_index}, {int(r.frame.mask.sum())} non-finite pixels")


def read_header(r):
    """Band, time, exposure, camera and site from the header; its WCS, if usable."""
    frame = r.frame
    r.info = normalise_header(frame, r.config, r.warn)
    i = r.info
    r.log(f"band {i.band.name} (from {i.filter_raw!r}), exptime {i.exptime:g} s, start {i.date_obs.isot},"
          f" gain {i.gain:g}, read noise {i.rdnoise:g}, saturation {i.saturate:g}")
    r.header_wcs, r.header_wcs_problem = astrometry.header_wcs(frame.header, frame.data.shape)


def background(r, cosmic_rays=None):
    """Masks (cosmic rays too when asked), and the background with the sources masked."""
    frame, cfg = r.frame, r.config
    r.masks = detect.build_masks(frame.data, frame.mask, r.info.saturate, cfg.border_px,
                                 bool(cfg.cosmic_rays if cosmic_rays is None else cosmic_rays),
                                 r.info.gain, r.info.rdnoise)
    r.background = detect.estimate_background(frame.data, r.masks.bad)
    r.data_sub = frame.data - r.background.level
    r.log(f"background median {np.median(r.background.level):.2f} ADU, rms {r.background.global_rms:.3f} ADU")


def detection(r):
    """sep detection and a first FWHM from the sources' moments.  A frame
    whose detections are largely sharper than any PSF (a raw exposure) gets
    its cosmic rays masked (LA Cosmic) and is detected again, unless the
    ``cosmic_rays`` option says otherwise."""
    r.detections = detect.detect(r.data_sub, r.background, r.masks, r.config.detect_sigma, r.info.gain)
    if r.config.cosmic_rays is None and detect.needs_cosmic_ray_removal(r.detections.objs):
        n_sharp = int(detect.sharp(r.detections.objs).sum())
        background(r, cosmic_rays=True)
        r.detections = detect.detect(r.data_sub, r.background, r.masks, r.config.detect_sigma, r.info.gain)
        r.log(f"{n_sharp} of the detections were sharper than any PSF (cosmic rays, hot pixels):"
              f" LA Cosmic masked {int(r.masks.cosmic_rays.sum())} pixels")
    seeing_px = (r.config.seeing_arcsec / astrometry.pixel_scale_arcsec(r.header_wcs)
                 if r.header_wcs else None)
    r.fwhm0 = detect.initial_fwhm(r.detections.objs, r.detections.point_like, seeing_px)
    r.log(f"{len(r.detections)} sources above {r.config.detect_sigma:g} sigma,"
          f" first FWHM estimate {r.fwhm0:.2f} px")


def psf_model(r):
    """ePSF from isolated unsaturated stars, the FWHM measured on it, and
    windowed centroids sized by it."""
    det, objs = r.detections, r.detections.objs
    x, y = np.asarray(objs["x"]), np.asarray(objs["y"])
    stars = psf.select_psf_stars(x, y, objs["flux"], det.peak, det.point_like, r.fwhm0, r.info.saturate,
                                 r.data_sub.shape)
    if len(stars) < psf.MIN_PSF_STARS:
        r.warn(f"only {len(stars)} isolated unsaturated stars: no PSF model, FWHM from moments")
        r.psf = psf.PSFModel(None, r.fwhm0, stars)
    else:
        epsf = psf.build_epsf(r.data_sub, x[stars], y[stars], r.fwhm0)
        fwhm, beta = psf.epsf_fwhm(epsf)
        r.log(f"ePSF from {len(stars)} stars, FWHM {fwhm:.3f} px, Moffat beta {beta:.2f}")
        if fwhm < psf.MIN_SAMPLED_FWHM:
            r.warn(f"undersampled PSF (FWHM {fwhm:.2f} px): apertures and centroid windows are sized for"
                   f" {psf.MIN_SAMPLED_FWHM} px, and its wings taken as Moffat beta {psf.DEFAULT_BETA}")
            fwhm, beta = psf.MIN_SAMPLED_FWHM, psf.DEFAULT_BETA
        r.psf = psf.PSFModel(epsf, fwhm, stars, beta)
    r.x, r.y = detect.windowed_positions(r.data_sub, x, y, r.psf.fwhm, r.masks.bad)


def initial_wcs(r):
    """The header's WCS, or a plate solution (one solve-field run, hinted by
    the pointing and pixel scale when known); the airmass, now that the
    pointing is known."""
    cfg = r.config
    if r.header_wcs is not None and cfg.plate_solve != "always":
        r.astrometry = astrometry.Solution(r.header_wcs, "header")
    else:
        if cfg.plate_solve == "never":
            raise AstrometryError(f"{r.header_wcs_problem} and plate solving is disabled")
        r.log(r.header_wcs_problem or "plate solving forced")
        hint = hints.from_header(r.frame.header, cfg)
        objs, shape = r.detections.objs, r.data_sub.shape
        fluxerr = detect.flux_error(objs, r.background, r.info.gain)
        solved = astrometry.solve(Table(dict(x=r.x, y=r.y, flux=objs["flux"], fluxerr=fluxerr)), shape, hint,
                                  _stars_around_pointing(r, hint), cfg, r.log,
                                  why=r.header_wcs_problem or "plate solving was asked for")
        r.astrometry = astrometry.Solution(solved, "solved")
        centre = r.centre
        r.log(f"solved: centre RA {centre.ra.deg:.5f} Dec {centre.dec.deg:.5f},"
              f" {astrometry.pixel_scale_arcsec(solved):.3f} arcsec/px")
    fill_airmass(r.info, r.centre, r.warn)


def _stars_around_pointing(r, hint):
    """Reference stars (at mid-exposure) where the field may be, to solve
    against: G < 19 (quads need bright stars) within the pointing error
    beyond the field; None without a pointing and a pixel scale."""
    if not (hint.has_pointing and hint.has_scale):
        return None
    cfg = r.config
    radius = min(hint.field_radius_deg(r.data_sub.shape) + hint.radius_deg, 3.0)
    try:
        stars = refcat.load_reference(cfg.refcat, hint.ra, hint.dec, radius, min(cfg.max_calib_mag + 1.0, 19.0),
                                      cfg.cache_dir)
    except CatalogueError as exc:          # the installed index may still solve a wide field
        r.warn(f"solving without the reference stars around the pointing: {exc}")
        return None
    r.log(f"{len(stars)} reference stars within {radius:.3f} deg of the pointing ({cfg.refcat.get('kind')})")
    return refcat.at_epoch(stars, r.info.time_mid.jyear)


def reference_stars(r):
    """The reference catalogue over the field, moved to mid-exposure."""
    cfg = r.config
    radius = astrometry.field_radius_deg(r.wcs, r.data_sub.shape) * 1.05 + 30.0 / 3600
    centre = r.centre
    ref = refcat.load_reference(cfg.refcat, centre.ra.deg, centre.dec.deg, radius, cfg.max_calib_mag + 1.0,
                                cfg.cache_dir)
    r.log(f"{len(ref)} reference stars within {radius:.3f} deg ({cfg.refcat.get('kind')})")
    r.reference = refcat.at_epoch(ref, r.info.time_mid.jyear)


def refine_wcs(r):
    """Refine the WCS on the brightest clean stars, at the order the matches
    support; a WCS that cannot be refined, or is not improved, is kept (a
    warning says so), except a failed blind solution."""
    if len(r.reference) < 3:
        r.unverified_wcs = f"only {len(r.reference)} reference stars"
        r.warn(f"{r.unverified_wcs}: WCS not refined")
        return
    objs, det = r.detections.objs, r.detections
    # the brightest clean sources first, then deblended, then saturated ones
    # (centroids still good to a fraction of a pixel): crowded and shallow
    # fields need them; the fit's clipping removes the few that are off
    saturated, deblended = det.peak >= r.info.saturate, (objs["flag"] & 1) > 0
    order = np.lexsort((-objs["flux"], deblended, saturated))
    clean = order[(objs["flag"][order] & ~1) == 0][:1500]
    try:
        refined = astrometry.refine(r.wcs, r.x[clean], r.y[clean], r.reference, r.psf.fwhm,
                                    r.config.sip_order, r.data_sub.shape, r.log)
    except AstrometryError as exc:
        if r.astrometry.source == "solved":
            raise
        r.unverified_wcs = str(exc)
        r.warn(f"WCS kept from header: {exc}")
        return
    if refined.fit_order is None:
        r.warn(f"the {r.astrometry.source} WCS was kept: refinement did not improve it")
        refined.source = r.astrometry.source
    elif r.astrometry.source == "solved":
        refined.source = "solved"
    r.astrometry = refined


def aperture_photometry(r):
    """Apertures with a local sky annulus; the calibration aperture is
    corrected to total flux by a spatial map measured on bright isolated stars."""
    fwhm, shape = r.psf.fwhm, r.data_sub.shape
    radii = aperture.Apertures.for_fwhm(fwhm, r.config)
    exclude = r.masks.bad | r.masks.saturated | detect.footprints(shape, r.detections.objs)
    sky, n_annulus = aperture.local_sky(r.data_sub, r.x, r.y, *radii.annulus, exclude)
    fluxes, ap_flags = aperture.measure(r.data_sub, r.x, r.y, radii.measured, r.background.rms,
                                        r.info.gain, r.masks, sky, n_annulus)
    flags = ap_flags | r.detections.flags
    inst = {radius: aperture.instrumental_mag(*fluxes[radius], r.info.exptime) for radius in fluxes}
    (m_cal, e_cal), (m_total, e_total) = inst[radii.calibration], inst[radii.total]
    total_snr = fluxes[radii.total][0] / fluxes[radii.total][1]
    use = aperture.correction_stars(r.detections.point_like, flags, r.x, r.y, radii.total + fwhm, total_snr)
    correction, correction_err, how = _correction_map(r, m_cal, m_total, np.hypot(e_total, e_cal), use,
                                                      radii.calibration, radii.total)
    centre = ([0.5 * (shape[1] - 1)], [0.5 * (shape[0] - 1)])
    apcor, apcor_err = float(correction(*centre)[0]), float(correction_err(*centre)[0])
    r.log(f"apertures {', '.join(f'{a:.2f}' for a in radii.reported)} px; calibration aperture"
          f" {radii.calibration:.2f} px, aperture correction to {radii.total:.1f} px at the centre"
          f" {apcor:+.4f} +/- {apcor_err:.4f} mag ({how})")
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = fluxes[radii.calibration][0] / fluxes[radii.calibration][1]
    half_light = detect.flux_radius(r.data_sub, r.x, r.y, radii.total, r.masks.bad)
    stars = r.psf.star_index
    r.photometry = aperture.Photometry(
        x=r.x, y=r.y, fwhm=fwhm, apertures=radii, inst=inst, snr=snr, flags=flags,
        m_inst=m_cal + correction(r.x, r.y), e_inst=e_cal, apcor=apcor, apcor_err=apcor_err,
        exclude=exclude, sky_level=sky.level, half_light=half_light,
        psf_half_light=float(np.median(half_light[stars] if len(stars) else half_light)))


def psf_photometry(r):
    """PSF magnitudes tied to the calibration aperture by a spatial map (one
    ePSF for a PSF that varies across the field), then to total flux."""
    phot = r.photometry
    if not r.config.psf_photometry or r.psf.epsf is None:
        r.log("skipped: " + ("PSF photometry is off" if not r.config.psf_photometry else "no PSF model"))
        return
    flux, flux_err, ok = psf.fit_fluxes(r.data_sub, r.background.rms, r.info.gain, r.psf.epsf, phot.x, phot.y,
                                        1.5 * phot.fwhm, r.masks.bad, phot.sky_level)
    m_raw, e_psf = aperture.instrumental_mag(flux, flux_err, r.info.exptime)
    m_cal, e_cal = phot.m_cal_aperture
    use = r.detections.point_like & ok & (phot.flags == 0) & (phot.snr > 50)
    extent = (r.psf.epsf.data.shape[0] // 2) / psf.OVERSAMPLING      # the ePSF's flux is within its stamp
    correction, _, how = _correction_map(r, m_raw, m_cal, np.hypot(e_psf, e_cal), use, extent,
                                         phot.apertures.calibration)
    to_aperture = correction(phot.x, phot.y)
    phot.apcor_psf = float(np.median(to_aperture))
    phot.m_psf = np.where(ok, m_raw + to_aperture + (phot.m_inst - m_cal), np.nan)
    phot.e_psf = e_psf
    phot.flags |= np.where(ok, 0, FLAG_PSF_FAILED).astype(np.int32)
    r.log(f"PSF fit of {len(phot.x)} sources, {int(ok.sum())} good; PSF-to-aperture correction"
          f" {phot.apcor_psf:+.4f} mag (median; {how})")


#: stars an aperture-correction map needs; with fewer the PSF model gives it
MIN_CORRECTION_STARS = 5
#: error assumed for a correction from the PSF model (mag)
MODEL_CORRECTION_ERROR = 0.03


def _correction_map(r, mag_from, mag_to, err, use, r_from, r_to):
    """(correction(x, y), error(x, y), how): the spatial map measured on the
    stars ``use`` (``aperture.aperture_correction_map``) or, with fewer than
    ``MIN_CORRECTION_STARS`` of them, the PSF model's curve of growth from
    radius ``r_from`` to ``r_to`` (px), with a warning."""
    correction, correction_err, order, n_used = aperture.aperture_correction_map(
        mag_from, mag_to, err, use, r.x, r.y, r.data_sub.shape)
    if n_used >= MIN_CORRECTION_STARS:
        return correction, correction_err, f"order-{order} map from {n_used} stars"
    value = r.psf.magnitude_correction(r_from, r_to)
    r.warn(f"{n_used} stars isolated and bright enough to measure an aperture correction: the PSF"
           f" model's ({value:+.4f} mag from {r_from:.1f} to {r_to:.1f} px, +/- {MODEL_CORRECTION_ERROR})")
    return (lambda xx, yy: np.full(np.shape(xx), value), lambda xx, yy: np.full(np.shape(xx), MODEL_CORRECTION_ERROR),
            "PSF model")


def calibration(r):
    """Sources paired one-to-one with the reference stars, then the zero
    point and colour term fitted on the pairs."""
    r.ra, r.dec = r.wcs.all_pix2world(r.photometry.x, r.photometry.y, 0)
    radius = max(1.0, 0.6 * r.psf.fwhm * r.pixel_scale)
    r.gaia = calibrate.GaiaMatch(*crossmatch.nearest_match(r.ra, r.dec, r.reference["ra"], r.reference["dec"],
                                                           radius), radius)
    try:
        r.calibration = calibrate.calibrate(r.photometry, r.reference, r.gaia, r.info.band, r.config,
                                            r.data_sub.shape, r.log, r.warn)
    except CalibrationError as exc:
        if not r.astrometry.verified:           # neither the photometry nor the WCS checked out
            raise CalibrationError(f"{exc}; the {r.astrometry.source} WCS could not be checked against"
                                   f" reference stars either ({r.unverified_wcs})") from exc
        r.calibration_error = str(exc)          # the WCS stands: products kept, uncalibrated
        r.warn(f"no photometric calibration ({exc}): the image and its instrumental catalogue are"
               " kept without a zero point (calibration level 1)")


def source_catalogue(r):
    """The source table: calibrated magnitudes (zero-point error included),
    sizes and the Gaia identification."""
    phot, cal, n = r.photometry, r.calibration, len(r.photometry.x)
    gaia_id, gaia_sep, colour = np.zeros(n, dtype=np.int64), np.full(n, np.nan), np.full(n, np.nan)
    src, ref = r.gaia.source_index, r.gaia.ref_index
    gaia_id[src] = np.asarray(r.reference["source_id"])[ref]
    gaia_sep[src] = r.gaia.separation
    colour[src] = np.asarray(r.reference["phot_bp_mean_mag"] - r.reference["phot_rp_mean_mag"])[ref]
    if cal is None:
        offset = zp_err = np.full(n, np.nan)
    else:
        offset = cal.zero_at(phot.x, phot.y) + cal.colour_term * np.where(np.isfinite(colour), colour,
                                                                          cal.median_colour)
        zp_err = cal.zero_err_at(phot.x, phot.y)
    s = Table()
    s["source_num"] = np.arange(1, n + 1, dtype=np.int32)
    s["x_image"], s["y_image"] = phot.x + 1.0, phot.y + 1.0
    s["ra"], s["dec"] = r.ra, r.dec
    for k, radius in enumerate(phot.apertures.reported, start=1):
        m_k, e_k = phot.inst[radius]
        s[f"mag_ap{k}"] = m_k + offset
        s[f"mag_ap{k}_err"] = e_k
    no_psf = np.full(n, np.nan)
    s["mag_psf"] = phot.m_psf + offset if phot.m_psf is not None else no_psf
    s["mag_psf_err"] = np.hypot(phot.e_psf, zp_err) if phot.e_psf is not None else no_psf
    s["mag_inst"], s["mag_inst_err"] = phot.m_inst, phot.e_inst
    s["mag_cal"] = phot.m_inst + offset
    s["mag_cal_err"] = np.hypot(phot.e_inst, zp_err)
    s["snr"] = phot.snr
    s["fwhm"] = phot.fwhm * phot.half_light / phot.psf_half_light * r.pixel_scale
    s["ellipticity"] = 1.0 - r.detections.objs["b"] / r.detections.objs["a"]
    s["flags"] = phot.flags
    s["gaia_source_id"], s["gaia_sep"], s["gaia_bp_rp"] = gaia_id, gaia_sep, colour
    r.sources = s


def enrichment(r):
    """Cross-identification with SIMBAD, VSX, Milliquas, SkyBoT and Astro-COLIBRI."""
    site = r.info.site
    site = None if site is None else (float(site.lat.deg), float(site.lon.deg), float(site.height.to_value("m")))
    field = enrich.Field(ra=r.centre.ra.deg, dec=r.centre.dec.deg,
                         radius_deg=astrometry.field_radius_deg(r.wcs, r.data_sub.shape),
                         time_mid=r.info.time_mid, astrometric_rms_arcsec=r.astrometry.rms_arcsec, site=site,
                         observatory_code=r.config.observatory_code)
    r.enrichment = enrich_sources(r.sources, field, r.config, r.log)


def enrich_sources(sources, field, config, log):
    """Fill the sources' cross-identification columns; returns the summary's
    enrichment entries (outcome per service, missing services, notable objects)."""
    columns, notable, outcomes = enrich.enrich(sources["ra"], sources["dec"], field, config, log)
    for name, values in columns.items():
        sources[name] = values.astype(str) if values.dtype == object else values
    status, missing = enrich.outcome_summary(outcomes)
    site = dict(zip(("lat", "lon", "height"), field.site)) if field.site else None
    return dict(enrichment=status, enrichment_missing=missing, notable_objects=notable,
                site=site, observatory_code=field.observatory_code)


def limits(r):
    """The 5-sigma limiting magnitude from empty-sky apertures."""
    phot = r.photometry
    zero_point = r.calibration.zero_point if r.calibration else np.nan
    r.limit, sigma_ap = calibrate.limiting_magnitude(r.data_sub, phot.exclude, phot.apertures.calibration,
                                                     r.info.exptime, zero_point, phot.apcor)
    r.log(f"5-sigma limiting magnitude {r.limit:.3f} ({r.info.band.name}), aperture noise {sigma_ap:.2f} ADU")


def products(r):
    """The summary, then the products (FITS, catalogues, plots) into place."""
    from . import products as writers
    r.summary = summary(r)
    writers.write_all(r.out, r.frame, r.wcs, r.summary, r.sources, r.calibration, r.data_sub, r.log)
    r.log(f"done: {len(r.sources)} sources, ZP {r.summary.zero_point:.4f}, limit {r.limit:.2f},"
          f" FWHM {r.psf.fwhm * r.pixel_scale:.2f} arcsec, calibration level {r.summary.calib_level}")


def summary(r):
    """The run's ``Summary`` (the processing times are added when it is written)."""
    info, phot, shape, scale = r.info, r.photometry, r.data_sub.shape, r.pixel_scale
    ellipticity = np.asarray(r.sources["ellipticity"])
    stars = r.psf.star_index
    return Summary(
        obs_id=obs_id_for(r.checksum), pipeline_version=__version__, source_file=r.image_path.name,
        checksum_sha256=r.checksum, processed_at=Time.now().isot + "Z",
        filter=info.band.name, filter_header=info.filter_raw,
        em_min=info.band.em_min, em_max=info.band.em_max,
        date_obs=info.date_obs.isot, mjd_start=float(info.date_obs.mjd), mjd_mid=info.mjd_mid,
        mjd_end=float(info.date_obs.mjd + info.exptime / 86400.0), exptime=info.exptime,
        telescope=info.telescope, instrument=info.instrument, observer=info.observer, object=info.object,
        gain=info.gain, rdnoise=info.rdnoise, saturate=info.saturate, airmass=info.airmass,
        naxis1=shape[1], naxis2=shape[0], pixel_scale_arcsec=scale,
        ra_center=float(r.centre.ra.deg), dec_center=float(r.centre.dec.deg),
        footprint=astrometry.footprint(r.wcs, shape).tolist(),
        fov_deg=2 * astrometry.field_radius_deg(r.wcs, shape),
        wcs_source=r.astrometry.source, astrometric_rms_arcsec=r.astrometry.rms_arcsec,
        n_astrometric_stars=r.astrometry.n_stars, wcs_fit_order=r.astrometry.fit_order,
        colour_plane=r.frame.colour_plane,
        fwhm_px=phot.fwhm, fwhm_arcsec=phot.fwhm * scale,
        ellipticity=float(np.median(ellipticity[stars] if len(stars) else ellipticity)),
        **_calibration_entries(r.calibration, phot, r.calibration_error),
        aperture_radii_arcsec=[a * scale for a in phot.apertures.reported],
        calibration_radius_arcsec=phot.apertures.calibration * scale,
        aperture_correction=phot.apcor, aperture_correction_err=phot.apcor_err,
        psf_aperture_correction=phot.apcor_psf,
        limiting_mag_5sigma=r.limit, background_adu=float(np.median(r.background.level)),
        background_rms_adu=r.background.global_rms,
        n_sources=len(r.sources), n_reference_stars=len(r.reference), refcat=r.config.refcat.get("kind"),
        warnings=list(r.warnings), products=product_manifest(), **r.enrichment)


def _calibration_entries(cal, phot, error):
    """The summary's calibration: the fit's values (calibration level 2), or
    none and the reason (level 1)."""
    if cal is None:
        return dict(calib_level=1, calibration_error=error, calibration_band=None, zero_point=np.nan,
                    zero_point_err=np.nan, colour_term=np.nan, colour_term_err=np.nan, colour_index=None,
                    n_calibrators=0, calibration_rms=np.nan, calibration_intrinsic_rms=np.nan)
    return dict(
        calib_level=2, calibration_error=None, calibration_band=f"Gaia {cal.reference_band}",
        # the total-flux zero point carries the aperture correction's error too
        zero_point=cal.zero_point, zero_point_err=float(np.hypot(cal.zero_point_err, phot.apcor_err)),
        colour_term=cal.colour_term, colour_term_err=cal.colour_term_err if cal.has_colour else np.nan,
        colour_index="BP-RP" if cal.has_colour else None, n_calibrators=cal.n_calibrators,
        calibration_rms=cal.rms, calibration_intrinsic_rms=cal.intrinsic_rms)

"""The reduction's stages, each a function of the ``Reduction`` context.

A stage reads what earlier stages left on the context, calls the science
modules (detect, psf, astrometry, aperture, calibrate, ...) and leaves its
own result there.  The order is ``pipeline.STAGES``.
"""
import hashlib
from dataclasses import replace

import numpy as np
from astropy.table import Table
from astropy.time import Time

from . import __version__, aperture, astrometry, calibrate, crossmatch, detect, enrich, fitting, hints, psf, refcat
from .contract import (FLAG_BLENDED, FLAG_PSF_FAILED, FLAG_SHARP, FLAG_SKY_POOR, FLAG_TRAIL, Summary, instrument_key,
                       obs_id_for, product_manifest)
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
    r.frame = load_frame(r.image_path, r.config.colour_plane, r.config.max_image_pixels)
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
    """Detection through a filter matched to point sources, and a first FWHM
    from the sources' moments.  A frame whose detections are largely sharper
    than any PSF (a raw exposure) gets its cosmic rays masked (LA Cosmic)
    and is detected again, unless the ``cosmic_rays`` option says otherwise."""
    seeing_px = (r.config.seeing_arcsec / astrometry.pixel_scale_arcsec(r.header_wcs)
                 if r.header_wcs else None)
    r.detections = _detect(r, seeing_px)
    if r.config.cosmic_rays is None and detect.needs_cosmic_ray_removal(r.detections):
        n_sharp = int(r.detections.sharp.sum())
        background(r, cosmic_rays=True)
        r.detections = _detect(r, seeing_px)
        r.log(f"{n_sharp} of the detections were sharper than any PSF (cosmic rays, hot pixels):"
              f" LA Cosmic masked {int(r.masks.cosmic_rays.sum())} pixels")
    # the background pass's point sources measure the FWHM better than the
    # detections' moments (their isophotes come from the filtered image)
    r.fwhm0 = r.background.point_source_fwhm or detect.initial_fwhm(r.detections.objs, r.detections.point_like,
                                                                    seeing_px)
    r.log(f"{len(r.detections)} sources above S/N {r.config.detect_sigma:g} (filter FWHM"
          f" {r.detections.filter_fwhm:.2f} px), first FWHM estimate {r.fwhm0:.2f} px")
    for trail in r.detections.trails:
        r.warn(f"a trail crosses the frame (position angle {np.degrees(trail.theta) % 180:.1f} deg from +x,"
               f" {trail.s_max - trail.s_min:.0f} px long): sources on it are flagged")


#: the detection filter's FWHM (px) without point sources or a seeing guess
DEFAULT_FILTER_FWHM = 3.0


def _detect(r, seeing_px):
    """Detections with a filter of the point sources' FWHM: the background
    pass's, else the observer's seeing, else that of the sharpest stars
    found through a ``DEFAULT_FILTER_FWHM`` filter."""
    fwhm = r.background.point_source_fwhm or seeing_px
    if fwhm is None:
        objs, snr, _ = detect.detect_sources(r.data_sub, r.background, r.masks.bad, r.config.detect_sigma,
                                             DEFAULT_FILTER_FWHM)
        sharpest = detect.sharpest_star_fwhm(objs, snr)
        fwhm = sharpest if np.isfinite(sharpest) else DEFAULT_FILTER_FWHM
    return detect.detect(r.data_sub, r.background, r.masks, r.config.detect_sigma, r.info.gain, fwhm)


def psf_model(r):
    """ePSF from isolated unsaturated stars (``psf.CROWDED_MAX_PSF_STARS`` of
    them in a crowded field), the FWHM measured on it, and windowed
    centroids sized by it."""
    det, objs = r.detections, r.detections.objs
    x, y = np.asarray(objs["x"]), np.asarray(objs["y"])
    crowded = _crowded(x, y, r.fwhm0)
    stars = psf.select_psf_stars(x, y, objs["flux"], det.peak, det.point_like, r.fwhm0, r.info.saturate,
                                 r.data_sub.shape, psf.CROWDED_MAX_PSF_STARS if crowded else psf.MAX_PSF_STARS)
    if len(stars) < psf.MIN_PSF_STARS:
        r.warn(f"only {len(stars)} isolated unsaturated stars: no PSF model, FWHM from moments")
        r.psf = psf.PSFModel(None, r.fwhm0, stars)
    else:
        exclude = r.masks.bad | r.masks.saturated | detect.footprints(r.data_sub.shape, objs, FOOTPRINT_SCALE)
        strong = stars[det.snr[stars] >= psf.MIN_PSF_STAR_SNR]
        r.psf = _psf_from(r, r.data_sub, stars, x, y, exclude, strong)
    r.x, r.y = detect.windowed_positions(r.data_sub, x, y, r.psf.fwhm, r.masks.bad)


def _psf_from(r, image, stars, x_all, y_all, exclude, strong=None):
    """The ``PSFModel`` built on ``image`` from the detections ``stars``
    (positions ``x_all``, ``y_all`` of every detection), each with its local
    sky removed; an ePSF that EPSFBuilder let diverge is built again from
    the ``strong`` ones alone (``psf.MIN_PSF_STAR_SNR``) when there are
    enough, else refused."""
    x, y = x_all[stars], y_all[stars]
    annulus = np.array(r.config.sky_annulus_fwhm) * r.fwhm0
    sky, _ = aperture.local_sky(image, x, y, *annulus, exclude)
    epsf = psf.build_epsf(image, x, y, r.fwhm0, np.nan_to_num(sky.level), r.detections.objs)
    fwhm, beta = psf.epsf_fwhm(epsf)
    r.log(f"ePSF from {len(stars)} stars, FWHM {fwhm:.3f} px, Moffat beta {beta:.2f}")
    if fwhm < psf.MIN_SAMPLED_FWHM:
        r.warn(f"undersampled PSF (FWHM {fwhm:.2f} px): apertures and centroid windows are sized for"
               f" {psf.MIN_SAMPLED_FWHM} px, and its wings taken as Moffat beta {psf.DEFAULT_BETA}")
        fwhm, beta = psf.MIN_SAMPLED_FWHM, psf.DEFAULT_BETA
    model = psf.PSFModel(psf.smoothed(epsf, fwhm), fwhm, stars, beta)
    radius = r.config.growth_radius_fwhm * fwhm
    wings, moffat = model.to_total(radius), model.magnitude_correction(radius, np.inf)
    if wings < moffat - MAX_WING_EXCESS:
        r.warn(f"the ePSF from {len(stars)} stars puts {-wings:.3f} mag of a star's light beyond {radius:.1f} px,"
               f" its Moffat fit {-moffat:.3f}: its stars sit on structure (a galaxy, nebulosity) that their"
               " local sky did not remove; no PSF model (aperture photometry, Moffat corrections)")
        return psf.PSFModel(None, fwhm, stars, beta)
    negative = psf.negative_fraction(epsf)
    if negative <= MAX_NEGATIVE_FRACTION:
        return model
    if strong is not None and psf.MIN_PSF_STARS <= len(strong) < len(stars):
        r.log(f"the ePSF from {len(stars)} stars diverged (its negative samples hold {negative:.0%} of its flux):"
              f" built again from the {len(strong)} of S/N {psf.MIN_PSF_STAR_SNR:.0f} or more")
        return _psf_from(r, image, strong, x_all, y_all, exclude)
    r.warn(f"the ePSF from {len(stars)} stars diverged (its negative samples hold {negative:.0%} of its flux):"
           " no PSF model (aperture photometry, Moffat corrections, FWHM from moments)")
    return psf.PSFModel(None, r.fwhm0, stars)


#: an ePSF may put this much more light (mag) beyond the growth aperture
#: than its Moffat fit; more is light of the PSF stars' surroundings
MAX_WING_EXCESS = 0.05
#: an ePSF's negative samples may hold this fraction of its flux (sound
#: ones: 0.005 to 0.2; noisy ones, from tens of stars of S/N 10 to 50 on a
#: sparse frame, 0.25 to 0.5; EPSFBuilder's diverged ones: 1 to 50)
MAX_NEGATIVE_FRACTION = 0.5


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


#: detection S/N below which a centroid is too noisy to refine a WCS on
ASTROMETRIC_MIN_SNR = 10.0


def refine_wcs(r):
    """Refine the WCS on the brightest clean stars, at the order the matches
    support; a WCS that cannot be refined, or is not improved, is kept (a
    warning says so), except a failed blind solution."""
    if len(r.reference) < 3:
        r.unverified_wcs = f"only {len(r.reference)} reference stars"
        r.warn(f"{r.unverified_wcs}: WCS not refined")
        return
    objs, det = r.detections.objs, r.detections
    # the brightest clean point sources first, then the other clean ones
    # (galaxies' knots), then deblended, then saturated ones (centroids still
    # good to a fraction of a pixel): crowded and shallow fields need them;
    # the fit's clipping removes the few that are off.  Never artefacts, nor
    # sources below ASTROMETRIC_MIN_SNR (their centroids are off by 0.2 px and more).
    saturated, deblended = det.peak >= r.info.saturate, (objs["flag"] & 1) > 0
    order = np.lexsort((-objs["flux"], ~det.point_like, deblended, saturated))
    usable = (((objs["flag"] & ~1) == 0) & ~det.sharp & ((det.flags & FLAG_TRAIL) == 0)
              & (det.snr >= ASTROMETRIC_MIN_SNR))
    clean = order[usable[order]][:1500]
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


#: PSF fits use the pixels within this many FWHM of each source
PSF_FIT_RADIUS_FWHM = 1.5


def psf_fit(r):
    """The PSF's change of width across the field, measured on bright
    isolated stars; then every source's flux from one simultaneous PSF fit
    (saturated pixels left out: a saturated star is fitted on its wings)
    with it, and the model image of them all: the apertures measure each
    source with its neighbours' models removed.  In a crowded field the
    residual image is searched for stars the detection merged into brighter
    ones, and they are fitted too."""
    if r.psf.epsf is None:
        r.psf_fit = None
        r.log("skipped: no PSF model")
        return
    _measure_stretch(r)
    r.psf_fit = _fit_all(r)
    if _crowded(r.x, r.y, r.psf.fwhm):
        _add_residual_detections(r)
    r.log(f"PSF fit of {len(r.x)} sources, {int(r.psf_fit.ok.sum())} good")


def _fit_all(r):
    """``psf.fit_fluxes`` of every source, the pixels of the sources sharper
    than the PSF left out (a PSF fitted to a hot pixel subtracts a
    star-shaped hole around it from its neighbours and the sky; unfitted,
    they get no model and PSF_FAILED), unless the PSF is undersampled and
    they may be stars."""
    det = r.detections
    artefacts = detect.artefact_mask(r.data_sub.shape, det.objs[det.sharp & ~det.undersampled])
    return psf.fit_fluxes(r.data_sub, r.background.rms, r.info.gain, r.psf.epsf, r.x, r.y,
                          PSF_FIT_RADIUS_FWHM * r.psf.fwhm, r.masks.bad | r.masks.saturated | artefacts,
                          r.psf.stretch_at(r.x, r.y))


#: stars that measure the PSF's stretch: detection S/N, no detected
#: neighbour within STRETCH_ISOLATION_FWHM, and how many are needed
STRETCH_MIN_SNR, STRETCH_ISOLATION_FWHM, MIN_STRETCH_STARS = 100.0, 4.0, 10


def _measure_stretch(r):
    """The PSF's stretch over the ePSF across the field: ``psf.measure_stretch``
    on bright, unsaturated, isolated point sources, and a smooth map through
    them (``PSFModel.stretch``)."""
    det = r.detections
    bright = np.flatnonzero(det.point_like & (det.snr > STRETCH_MIN_SNR) & (det.peak < 0.5 * r.info.saturate)
                            & detect.isolated(r.x, r.y, STRETCH_ISOLATION_FWHM * r.psf.fwhm))
    if len(bright) < MIN_STRETCH_STARS:
        r.log(f"{len(bright)} stars bright and isolated enough to measure the PSF's change across the field:"
              " one PSF")
        return
    x, y = r.x[bright], r.y[bright]
    stretch, error = psf.measure_stretch(r.data_sub, r.background.rms, r.psf.epsf, x, y,
                                         PSF_FIT_RADIUS_FWHM * r.psf.fwhm, r.masks.bad | r.masks.saturated)
    surface = fitting.fit_surface(x, y, stretch, error, np.isfinite(stretch), r.data_sub.shape)
    r.psf = replace(r.psf, stretch=surface)
    h, w = r.data_sub.shape
    corners = surface(np.array([0, w - 1, 0, w - 1, 0.5 * (w - 1)]), np.array([0, 0, h - 1, h - 1, 0.5 * (h - 1)]))
    r.log(f"PSF width across the field: {100 * corners.min():+.1f} % to {100 * corners.max():+.1f} % of the"
          f" ePSF's (corners and centre; order-{surface.order} map from {surface.n_points} stars)")


#: a crowded field has more than CROWDED_FIELD detected neighbours per source
#: within CROWDING_RADIUS_FWHM: there the ePSF takes more stars
#: (``psf.CROWDED_MAX_PSF_STARS``) and the residual image is searched for the
#: stars the first detection merged into brighter ones
CROWDED_FIELD, CROWDING_RADIUS_FWHM = 0.3, 3.0


def _crowded(x, y, fwhm):
    """True when the sources at (x, y) have more than ``CROWDED_FIELD``
    neighbours each within ``CROWDING_RADIUS_FWHM`` times ``fwhm`` (px)."""
    from scipy.spatial import cKDTree
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(CROWDING_RADIUS_FWHM * fwhm)
    return 2.0 * len(pairs) / max(len(x), 1) > CROWDED_FIELD


def _add_residual_detections(r):
    """Add the sources found in the residual image (``detect.residual_detections``)
    to the detections, and fit everything again."""
    residual = r.data_sub - r.psf_fit.model
    added = detect.residual_detections(residual, r.psf_fit.model, r.background, r.masks, r.config.detect_sigma,
                                       r.psf.fwhm, r.x, r.y)
    r.log(f"crowded field: {len(added)} sources found in the residual image, beside brighter ones")
    if not len(added):
        return
    x, y = detect.windowed_positions(residual, np.asarray(added.objs["x"]), np.asarray(added.objs["y"]),
                                     r.psf.fwhm, r.masks.bad)
    r.detections = r.detections.extended(added)
    r.x, r.y = np.concatenate([r.x, x]), np.concatenate([r.y, y])
    r.psf_fit = _fit_all(r)


#: footprints (sep ellipse scale) kept out of sky annuli when no PSF model
#: removes the neighbours
FOOTPRINT_SCALE = 7.5


def aperture_photometry(r):
    """Apertures with a local sky annulus, measured with the neighbours'
    PSF models removed (crowded fields: the annulus sees sky, the aperture
    one star); the calibration aperture is corrected to total flux by a
    spatial map measured on bright stars with little neighbour light; PSF
    magnitudes are tied to the calibration aperture in the same way."""
    fwhm, shape, fit, objs = r.psf.fwhm, r.data_sub.shape, r.psf_fit, r.detections.objs
    radii = aperture.Apertures.for_fwhm(fwhm, r.config)
    image = r.data_sub if fit is None else r.data_sub - fit.model
    exclude = r.masks.bad | r.masks.saturated
    if fit is None:
        exclude = exclude | detect.footprints(shape, objs, FOOTPRINT_SCALE)
    sky, n_annulus = aperture.local_sky(image, r.x, r.y, *radii.annulus, exclude)
    own = None if fit is None else fit.own_light(radii.measured)
    fluxes, ap_flags = aperture.measure(image, r.x, r.y, radii.measured, r.background.rms, r.info.gain,
                                        r.masks, sky, n_annulus, own)
    crowding = aperture.neighbour_fraction(fit, own, r.x, r.y, radii.calibration)
    sharp = detect.sharper_than_psf(r.data_sub, objs["xpeak"], objs["ypeak"], r.background.rms, r.info.gain,
                                    r.psf.central_contrast())
    flags = ap_flags | r.detections.flags | np.where(sharp, FLAG_SHARP, 0).astype(np.int32)
    inst = {radius: aperture.instrumental_mag(*fluxes[radius], r.info.exptime) for radius in fluxes}
    (m_cal, e_cal), (m_growth, e_growth) = inst[radii.calibration], inst[radii.growth]
    growth_snr = fluxes[radii.growth][0] / fluxes[radii.growth][1]
    alone = (detect.isolated(r.x, r.y, radii.growth + fwhm) if fit is None
             else aperture.neighbour_fraction(fit, own, r.x, r.y, radii.growth) < MAX_CROWDING)
    use = aperture.correction_stars(r.detections.point_like, flags, growth_snr, alone)
    to_growth = _correction_map(r, m_cal, m_growth, np.hypot(e_growth, e_cal), use, radii.calibration, radii.growth)
    # beyond the growth radius the Moffat fit of the ePSF: the ePSF's own
    # light there, from tens of stars, was off by up to 0.02 mag
    wings = r.psf.magnitude_correction(radii.growth, np.inf)
    to_total = to_growth.shifted(wings, WING_ERROR_FRACTION * abs(wings))
    centre = _centre(shape)
    apcor, apcor_err = float(to_total.at(*centre)[0]), float(to_total.error(*centre)[0])
    r.log(f"apertures {', '.join(f'{a:.2f}' for a in radii.reported)} px; calibration aperture"
          f" {radii.calibration:.2f} px, aperture correction at the centre {apcor:+.4f} +/- {apcor_err:.4f} mag"
          f" (to {radii.growth:.1f} px: {to_growth.how}, star-to-star {to_growth.intrinsic:.4f}; beyond:"
          f" {wings:+.4f} from the PSF's Moffat fit)")
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = fluxes[radii.calibration][0] / fluxes[radii.calibration][1]
    half_light = aperture.half_light_radius(fluxes)
    point_half_light = aperture.stellar_half_light(
        half_light, (snr > SIZE_REFERENCE_SNR) & ((flags & ~(FLAG_BLENDED | FLAG_SKY_POOR)) == 0))
    stars = r.psf.star_index
    r.photometry = aperture.Photometry(
        x=r.x, y=r.y, fwhm=fwhm, apertures=radii, inst=inst, snr=snr, flags=flags,
        m_inst=m_cal + to_total.at(r.x, r.y), e_inst=to_total.star_error(e_cal),
        apcor=apcor, apcor_err=apcor_err, total_map=to_total, exclude=exclude, sky_level=sky.level,
        half_light=half_light,
        psf_half_light=(point_half_light if np.isfinite(point_half_light)
                        else float(np.nanmedian(half_light[stars] if len(stars) else half_light))),
        crowding=crowding)
    if fit is not None and r.config.psf_photometry:
        _psf_magnitudes(r, fit, sky.level)


def _psf_magnitudes(r, fit, sky_level):
    """PSF magnitudes (the residual sky removed) tied to the calibration
    aperture by a spatial map (one ePSF for a PSF that varies across the
    field), then to total flux."""
    phot = r.photometry
    m_raw, e_raw = aperture.instrumental_mag(fit.sky_corrected(sky_level), fit.flux_err, r.info.exptime)
    m_cal, e_cal = phot.m_cal_aperture
    use = r.detections.point_like & fit.ok & (phot.flags == 0) & (phot.snr > 50) & (phot.crowding < MAX_CROWDING)
    to_aperture = _correction_map(r, m_raw, m_cal, np.hypot(e_raw, e_cal), use, psf.epsf_extent(r.psf.epsf),
                                  phot.apertures.calibration)
    phot.apcor_psf = float(to_aperture.at(*_centre(r.data_sub.shape))[0])
    phot.psf_map = to_aperture
    to_total = phot.m_inst - m_cal
    phot.m_psf = np.where(fit.ok, m_raw + to_aperture.at(phot.x, phot.y) + to_total, np.nan)
    phot.e_psf = np.hypot(e_raw, psf_correction_error(phot, phot.x, phot.y))
    phot.flags |= np.where(fit.ok, 0, FLAG_PSF_FAILED).astype(np.int32)
    r.log(f"PSF magnitudes: PSF-to-aperture correction {phot.apcor_psf:+.4f} mag at the centre, star-to-star"
          f" {to_aperture.intrinsic:.4f} ({to_aperture.how})")


def psf_correction_error(phot, x, y):
    """The error (mag) of the correction from PSF flux to total at (x, y):
    the PSF-to-aperture map's, which the zero point (fitted on apertures)
    does not absorb, and both maps' scatter from star to star."""
    psf_map, total_map = phot.psf_map, phot.total_map
    return np.sqrt(psf_map.error(x, y) ** 2 + psf_map.intrinsic ** 2 + total_map.intrinsic ** 2)


#: the point sources' size (``aperture.stellar_half_light``) is measured on
#: sources above this S/N in the calibration aperture
SIZE_REFERENCE_SNR = 20.0
#: the PSF model's correction beyond the growth aperture is good to this fraction of itself
WING_ERROR_FRACTION = 0.1
#: calibrators and correction stars: neighbours' light (subtracted) at most
#: this fraction of the star's in the aperture
MAX_CROWDING = 0.1


def _centre(shape):
    """The frame centre as ([x], [y]), 0-based pixels."""
    return [0.5 * (shape[1] - 1)], [0.5 * (shape[0] - 1)]


#: stars an aperture-correction map needs; with fewer the PSF model gives it
MIN_CORRECTION_STARS = 5
#: error assumed for a correction from the PSF model (mag)
MODEL_CORRECTION_ERROR = 0.03


def _correction_map(r, mag_from, mag_to, err, use, r_from, r_to):
    """The ``aperture.CorrectionMap`` measured on the stars ``use`` or, with
    fewer than ``MIN_CORRECTION_STARS`` of them, the PSF model's curve of
    growth from radius ``r_from`` to ``r_to`` (px), with a warning."""
    fitted = aperture.aperture_correction_map(mag_from, mag_to, err, use, r.x, r.y, r.data_sub.shape)
    if fitted.n_stars >= MIN_CORRECTION_STARS:
        return fitted
    value = r.psf.magnitude_correction(r_from, r_to)
    r.warn(f"{fitted.n_stars} stars isolated and bright enough to measure an aperture correction: the PSF"
           f" model's ({value:+.4f} mag from {r_from:.1f} to {r_to:.1f} px, +/- {MODEL_CORRECTION_ERROR})")
    return aperture.CorrectionMap.constant(value, MODEL_CORRECTION_ERROR)


def calibration(r):
    """Sources paired one-to-one with the reference stars, then the zero
    point and colour term fitted on the pairs."""
    r.ra, r.dec = r.wcs.all_pix2world(r.photometry.x, r.photometry.y, 0)
    radius = max(1.0, 0.6 * r.psf.fwhm * r.pixel_scale)
    r.gaia = calibrate.GaiaMatch(*crossmatch.nearest_match(r.ra, r.dec, r.reference["ra"], r.reference["dec"],
                                                           radius), radius)
    try:
        registered = r.config.colour_term_registry.get(
            instrument_key(r.info.telescope, r.info.instrument, r.info.band.name))
        r.calibration = calibrate.calibrate(r.photometry, r.reference, r.gaia, r.info.band, r.config,
                                            r.data_sub.shape, r.log, r.warn, registered)
    except CalibrationError as exc:
        if not r.astrometry.verified:           # neither the photometry nor the WCS checked out
            raise CalibrationError(f"{exc}; the {r.astrometry.source} WCS could not be checked against"
                                   f" reference stars either ({r.unverified_wcs})") from exc
        r.calibration_error = str(exc)          # the WCS stands: products kept, uncalibrated
        r.warn(f"no photometric calibration ({exc}): the image and its instrumental catalogue are"
               " kept without a zero point (calibration level 1)")


def source_catalogue(r):
    """The source table: calibrated magnitudes with their measurement
    errors and, apart, the calibration's error at each source; sizes and
    the Gaia identification."""
    phot, cal, n = r.photometry, r.calibration, len(r.photometry.x)
    gaia_id, gaia_sep, colour = np.zeros(n, dtype=np.int64), np.full(n, np.nan), np.full(n, np.nan)
    src, ref = r.gaia.source_index, r.gaia.ref_index
    gaia_id[src] = np.asarray(r.reference["source_id"])[ref]
    gaia_sep[src] = r.gaia.separation
    colour[src] = np.asarray(r.reference["phot_bp_mean_mag"] - r.reference["phot_rp_mean_mag"])[ref]
    if cal is None:
        offset = calib_err = np.full(n, np.nan)
    else:
        offset, calib_err = cal.offset_at(phot.x, phot.y, colour), cal.error_at(phot.x, phot.y, colour)
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
    s["mag_psf_err"] = phot.e_psf if phot.e_psf is not None else no_psf
    s["mag_inst"], s["mag_inst_err"] = phot.m_inst, phot.e_inst
    s["mag_cal"] = phot.m_inst + offset
    s["mag_cal_err"] = phot.e_inst
    s["mag_calib_err"] = calib_err
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
    """The 5-sigma limiting magnitude of a point source, from the noise of
    PSF fits at empty positions (the measurement the detection threshold
    matches), or of calibration apertures without a PSF model.  Empty: no
    detection's footprint within reach, artefacts included (a wide PSF's
    model residuals and the cosmic rays left in the image are not sky
    noise: at a 5-px FWHM they made the noise 1.3x that of empty sky).  A
    field too crowded for enough such positions is measured beside the
    sources, their models removed."""
    phot = r.photometry
    zero_point = r.calibration.zero_point if r.calibration else np.nan
    fit_radius = PSF_FIT_RADIUS_FWHM * phot.fwhm
    reach = max(fit_radius, phot.apertures.calibration)
    footprints = detect.footprints(r.data_sub.shape, r.detections.objs, FOOTPRINT_SCALE)
    x, y = calibrate.empty_sky_positions(phot.exclude | footprints, reach)
    where = "empty sky"
    if x.size < calibrate.MIN_EMPTY_POSITIONS:
        x, y = calibrate.empty_sky_positions(phot.exclude, reach)
        where = "sky beside the sources (a crowded field)"
    image = r.data_sub if r.psf_fit is None else r.data_sub - r.psf_fit.model
    if phot.m_psf is not None:
        fluxes = psf.isolated_fluxes(image, r.background.rms, r.psf.epsf, x, y, fit_radius, r.masks.bad,
                                     r.psf.stretch_at(x, y))
        correction, r.limit_method = phot.apcor_psf + phot.apcor, "PSF fits"
    else:
        fluxes = aperture.circle_sum(image, x, y, phot.apertures.calibration)
        correction, r.limit_method = phot.apcor, "calibration apertures"
    r.limit, sigma = calibrate.limiting_magnitude(fluxes, r.info.exptime, zero_point, correction)
    r.log(f"5-sigma limiting magnitude {r.limit:.3f} ({r.info.band.name}) from {len(fluxes)} {r.limit_method}"
          f" on {where}, flux noise {sigma:.2f} ADU")


def products(r):
    """The summary, then the products (FITS, catalogues, plots) into place."""
    from . import products as writers
    r.summary = summary(r)
    writers.write_all(r.out, r.frame, r.wcs, r.summary, r.sources, r.calibration, r.data_sub, r.log)
    write_photometric_model(r)
    r.log(f"done: {len(r.sources)} sources, ZP {r.summary.zero_point:.4f}, limit {r.limit:.2f},"
          f" FWHM {r.psf.fwhm * r.pixel_scale:.2f} arcsec, calibration level {r.summary.calib_level}")


def write_photometric_model(r):
    """photmodel.fits: what forced photometry at any position needs later
    (``forced.write_model``)."""
    from . import forced
    phot, cal, epsf = r.photometry, r.calibration, r.psf.epsf
    with_psf = epsf is not None and phot.psf_map is not None
    no_colour = np.nan
    maps = dict(
        zero_point=None if cal is None else lambda x, y: cal.offset_at(x, y, np.full(np.shape(x), no_colour)),
        zero_point_err=None if cal is None else lambda x, y: cal.error_at(x, y, np.full(np.shape(x), no_colour)),
        aperture_to_total=phot.total_map.at,
        aperture_to_total_err=lambda x, y: phot.total_map.star_error(np.zeros(np.shape(x))),
        psf_to_total=(lambda x, y: phot.psf_map.at(x, y) + phot.total_map.at(x, y)) if with_psf else None,
        psf_to_total_err=(lambda x, y: psf_correction_error(phot, x, y)) if with_psf else None,
        stretch=(lambda x, y: np.zeros(np.shape(x))) if r.psf.stretch is None else r.psf.stretch_at)
    keywords = dict(FWHM=phot.fwhm, FITRAD=PSF_FIT_RADIUS_FWHM * phot.fwhm, APRAD=phot.apertures.calibration,
                    ANNIN=phot.apertures.annulus[0], ANNOUT=phot.apertures.annulus[1], EXPTIME=r.info.exptime,
                    GAIN=r.info.gain, CALCOLOR=r.summary.calibration_colour)
    forced.write_model(r.out / forced.MODEL_NAME, r.data_sub.shape, epsf if with_psf else None, maps, keywords)


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
        limiting_mag_5sigma=r.limit, limiting_mag_method=r.limit_method,
        background_adu=float(np.median(r.background.level)),
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
        calibration_rms=cal.rms, calibration_intrinsic_rms=cal.intrinsic_rms,
        calibration_colour=cal.median_colour if cal.has_colour else None,
        colour_term_source=cal.colour_term_source if cal.has_colour else None)

"""Photometric calibration against Gaia DR3 and the limiting magnitude.

Model (stdpipe's ``photometry.match``, robust weighted least squares with
iterative rejection):  m_cat = m_inst + ZP(x, y) + C * (BP - RP), where
m_inst = -2.5 log10(flux_total / EXPTIME) and ZP(x, y) is a polynomial of
order ``zp_spatial_order``.  Reported ``zero_point`` is ZP at the frame centre.
No fitted value is rounded.
"""
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std

from .errors import CalibrationError
from .refcat import GAIA_MAG_COLUMN

MIN_CALIBRATORS = 5


@dataclass
class Calibration:
    zero_point: float
    zero_point_err: float
    colour_term: float
    colour_term_err: float
    n_calibrators: int
    rms: float
    reference_band: str
    median_colour: float
    fit: dict               # stdpipe's result (matches, model, zero_fn)

    def zero_at(self, x, y):
        return self.fit["zero_fn"](x, y)

    def zero_err_at(self, x, y):
        return self.fit["zero_fn"](x, y, get_err=True)


def calibrate(x, y, ra, dec, mag, magerr, flags, refcat, band, config, match_radius_arcsec, shape, log):
    from stdpipe.photometry_model import match
    ref_col = GAIA_MAG_COLUMN[band.gaia_band]
    cat_mag = np.asarray(refcat[ref_col], dtype=float)
    colour = np.asarray(refcat["phot_bp_mean_mag"] - refcat["phot_rp_mean_mag"], dtype=float)
    usable = np.isfinite(cat_mag) & (cat_mag <= config.max_calib_mag) & (cat_mag >= config.min_calib_mag)
    have_colour = np.isfinite(colour) & usable
    use_colour = have_colour.sum() >= MIN_CALIBRATORS
    if not use_colour:
        log("reference stars have no BP-RP colours: colour term fixed at 0")
    if use_colour:
        usable &= have_colour
    if usable.sum() < MIN_CALIBRATORS:
        raise CalibrationError(f"no calibrators: only {int(usable.sum())} reference stars with "
                               f"{config.min_calib_mag:g} <= {band.gaia_band} <= {config.max_calib_mag:g}"
                               " in the field")
    good_obj = np.isfinite(mag) & np.isfinite(magerr)
    h, w = shape
    n_matched, n_clean = _count_matches(ra, dec, magerr, flags, refcat[usable], match_radius_arcsec, config)
    if n_clean < MIN_CALIBRATORS:
        raise CalibrationError(_no_calibrators(n_matched, n_clean, match_radius_arcsec, config))
    # a spatial zero-point term only with 10 clean calibrators per coefficient
    spatial = config.zp_spatial_order
    while spatial > 0 and n_clean < 10 * (spatial + 1) * (spatial + 2) // 2:
        spatial -= 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = match(
            ra[good_obj], dec[good_obj], mag[good_obj], magerr[good_obj], flags[good_obj],
            refcat["ra"][usable], refcat["dec"][usable], cat_mag[usable],
            cat_color=colour[usable] if use_colour else None,
            sr=match_radius_arcsec / 3600.0, obj_x=x[good_obj], obj_y=y[good_obj],
            spatial_order=spatial, threshold=5.0, niter=10, accept_flags=0, robust=True, sn=config.min_calib_snr,
            use_color=bool(use_colour), force_color_term=None if use_colour else 0.0,
            verbose=lambda *args: log("stdpipe: " + " ".join(str(a) for a in args)))
    n_used = 0 if result is None else int(np.sum(result["idx"]))
    if n_used < MIN_CALIBRATORS:
        raise CalibrationError(f"the zero-point fit kept {n_used} of {n_clean} calibrators after"
                               f" rejecting outliers ({MIN_CALIBRATORS} needed)")
    xc, yc = 0.5 * (w - 1), 0.5 * (h - 1)
    zp = float(np.atleast_1d(result["zero_fn"](np.array([xc]), np.array([yc])))[0])
    zp_err = float(np.atleast_1d(result["zero_fn"](np.array([xc]), np.array([yc]), get_err=True))[0])
    cterm = float(np.atleast_1d(result["color_term"])[0]) if use_colour else 0.0
    cterm_err = float(np.atleast_1d(result["color_term_err"])[0]) if use_colour and result.get("color_term_err") is not None else 0.0
    rms = float(mad_std((result["zero"] - result["zero_model"])[result["idx"]]))
    median_colour = float(np.median(result["color"][result["idx"]])) if use_colour else 0.0
    log(f"zero point {zp:.4f} +/- {zp_err:.4f} mag, colour term {cterm:.4f} +/- {cterm_err:.4f},"
        f" {n_used} calibrators, rms {rms:.3f} mag, spatial order {spatial}")
    # map the fit's object indices (over good_obj) back to all sources
    result["oidx_all"] = np.flatnonzero(good_obj)[result["oidx"]]
    result["cidx_all"] = np.flatnonzero(usable)[result["cidx"]]
    return Calibration(zp, zp_err, cterm, cterm_err, n_used, rms, band.gaia_band,
                       median_colour, result)


def _count_matches(ra, dec, magerr, flags, refcat, radius_arcsec, config):
    """(matched, usable) detections: one-to-one matches with the reference
    stars, and those of them unflagged and above the calibrator S/N."""
    from .astrometry import nearest_match
    oidx, _, _ = nearest_match(ra, dec, refcat["ra"], refcat["dec"], radius_arcsec)
    clean = (flags[oidx] == 0) & (magerr[oidx] < 1.0 / config.min_calib_snr)
    return len(oidx), int(clean.sum())


def _no_calibrators(n_matched, n_clean, radius_arcsec, config):
    return (f"no calibrators: {n_matched} stars matched the reference catalogue within"
            f" {radius_arcsec:.1f} arcsec, {n_clean} of them unsaturated, unblended and above"
            f" S/N {config.min_calib_snr:g} ({MIN_CALIBRATORS} needed)")


def limiting_magnitude(data_sub, exclude, radius, exptime, zero_point, aperture_correction,
                       rng_seed=0, n_apertures=2000, nsigma=5.0):
    """``nsigma`` limiting magnitude from the flux scatter in random apertures
    placed on empty sky (robust std), corrected to total flux and calibrated
    at colour 0.  Returns (limit, sigma_aperture_adu)."""
    import sep_x as sep
    h, w = data_sub.shape
    rng = np.random.default_rng(rng_seed)
    margin = radius + 2
    x = rng.uniform(margin, w - 1 - margin, 4 * n_apertures)
    y = rng.uniform(margin, h - 1 - margin, 4 * n_apertures)
    covered, _, _ = sep.sum_circle(exclude.astype(np.float32), x, y, radius, subpix=1)
    empty = covered == 0
    if empty.sum() < 50:
        return np.nan, np.nan
    flux, _, _ = sep.sum_circle(data_sub, x[empty][:n_apertures], y[empty][:n_apertures], radius, subpix=5)
    sigma = float(mad_std(flux))
    limit = zero_point + aperture_correction - 2.5 * np.log10(nsigma * sigma / exptime)
    return float(limit), sigma

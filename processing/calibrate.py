"""Photometric calibration against Gaia DR3 and the limiting magnitude.

Model (stdpipe's ``photometry.match``, robust weighted least squares with
iterative rejection):  m_cat = m_inst + ZP(x, y) + C * (BP - RP), where
m_inst = -2.5 log10(flux_total / EXPTIME) and ZP(x, y) is a polynomial of
order ``zp_spatial_order``.  Reported ``zero_point`` is ZP at the frame centre.
No fitted value is rounded.

The sources are paired with the reference stars once, before calibration
(``crossmatch.nearest_match``); the fit is given those pairs only.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.stats import mad_std

from .errors import CalibrationError
from .refcat import GAIA_MAG_COLUMN

MIN_CALIBRATORS = 5


@dataclass
class GaiaMatch:
    """One-to-one pairs of sources and reference stars (indices) and their
    separations (arcsec), within ``radius_arcsec``."""
    source_index: np.ndarray
    ref_index: np.ndarray
    separation: np.ndarray
    radius_arcsec: float


@dataclass
class Calibration:
    """The fitted zero point and colour term, and the calibrators: arrays
    aligned with ``source_index`` (the sources that were paired with a usable
    reference star), ``used`` marking those the fit kept."""
    zero_point: float
    zero_point_err: float
    colour_term: float
    colour_term_err: float
    n_calibrators: int
    rms: float
    reference_band: str
    median_colour: float
    source_index: np.ndarray
    catalogue_mag: np.ndarray
    colour: np.ndarray               # BP-RP (0 when no colour term is fitted)
    zero: np.ndarray                 # catalogue minus instrumental magnitude
    zero_err: np.ndarray
    zero_model: np.ndarray           # the model at each calibrator, colour term included
    used: np.ndarray
    zero_fn: object = field(repr=False)   # stdpipe's zero_fn(x, y, get_err=False)

    def zero_at(self, x, y):
        return self.zero_fn(x, y)

    def zero_err_at(self, x, y):
        return self.zero_fn(x, y, get_err=True)


def calibrate(phot, ref, match, band, config, shape, log):
    """Fit the zero point and colour term on the matched, usable reference
    stars; raises ``CalibrationError`` with the reason when it cannot."""
    from stdpipe.photometry_model import match as fit_match
    cat_mag = np.asarray(ref[GAIA_MAG_COLUMN[band.gaia_band]], dtype=float)
    colour = np.asarray(ref["phot_bp_mean_mag"] - ref["phot_rp_mean_mag"], dtype=float)
    usable = np.isfinite(cat_mag) & (cat_mag <= config.max_calib_mag) & (cat_mag >= config.min_calib_mag)
    use_colour = (np.isfinite(colour) & usable).sum() >= MIN_CALIBRATORS
    if use_colour:
        usable &= np.isfinite(colour)
    else:
        log("reference stars have no BP-RP colours: colour term fixed at 0")
    if usable.sum() < MIN_CALIBRATORS:
        raise CalibrationError(f"no calibrators: only {int(usable.sum())} reference stars with "
                               f"{config.min_calib_mag:g} <= {band.gaia_band} <= {config.max_calib_mag:g}"
                               " in the field")
    keep = usable[match.ref_index] & np.isfinite(phot.m_inst[match.source_index]) \
        & np.isfinite(phot.e_inst[match.source_index])
    src, cat = match.source_index[keep], match.ref_index[keep]
    clean = (phot.flags[src] == 0) & (phot.e_inst[src] < 1.0 / config.min_calib_snr)
    n_clean = int(clean.sum())
    if n_clean < MIN_CALIBRATORS:
        raise CalibrationError(_no_calibrators(len(src), n_clean, match.radius_arcsec, config))
    spatial = _spatial_order(config.zp_spatial_order, n_clean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_match(
            ref["ra"][cat], ref["dec"][cat], phot.m_inst[src], phot.e_inst[src], phot.flags[src],
            ref["ra"][cat], ref["dec"][cat], cat_mag[cat], cat_color=colour[cat] if use_colour else None,
            sr=1e-6, obj_x=phot.x[src], obj_y=phot.y[src],
            spatial_order=spatial, threshold=5.0, niter=10, accept_flags=0, robust=True, sn=config.min_calib_snr,
            use_color=bool(use_colour), force_color_term=None if use_colour else 0.0,
            verbose=lambda *args: log("stdpipe: " + " ".join(str(a) for a in args)))
    n_used = 0 if result is None else int(np.sum(result["idx"]))
    if n_used < MIN_CALIBRATORS:
        raise CalibrationError(f"the zero-point fit kept {n_used} of {n_clean} calibrators after"
                               f" rejecting outliers ({MIN_CALIBRATORS} needed)")
    return _calibration(result, src, band, shape, use_colour, log, spatial)


def _spatial_order(wanted, n_clean):
    """The zero point's spatial order: 10 clean calibrators per coefficient."""
    order = wanted
    while order > 0 and n_clean < 10 * (order + 1) * (order + 2) // 2:
        order -= 1
    return order


def _calibration(result, src, band, shape, use_colour, log, spatial):
    """``Calibration`` from stdpipe's result (whose object indices run over ``src``)."""
    h, w = shape
    centre = (np.array([0.5 * (w - 1)]), np.array([0.5 * (h - 1)]))
    zp = float(np.atleast_1d(result["zero_fn"](*centre))[0])
    zp_err = float(np.atleast_1d(result["zero_fn"](*centre, get_err=True))[0])
    cterm = float(np.atleast_1d(result["color_term"])[0]) if use_colour else 0.0
    cterm_err = (float(np.atleast_1d(result["color_term_err"])[0])
                 if use_colour and result.get("color_term_err") is not None else 0.0)
    used = np.asarray(result["idx"], dtype=bool)
    rms = float(mad_std((result["zero"] - result["zero_model"])[used]))
    median_colour = float(np.median(result["color"][used])) if use_colour else 0.0
    log(f"zero point {zp:.4f} +/- {zp_err:.4f} mag, colour term {cterm:.4f} +/- {cterm_err:.4f},"
        f" {int(used.sum())} calibrators, rms {rms:.3f} mag, spatial order {spatial}")
    return Calibration(
        zero_point=zp, zero_point_err=zp_err, colour_term=cterm, colour_term_err=cterm_err,
        n_calibrators=int(used.sum()), rms=rms, reference_band=band.gaia_band, median_colour=median_colour,
        source_index=src[result["oidx"]], catalogue_mag=np.asarray(result["cmag"]),
        colour=np.asarray(result["color"]), zero=np.asarray(result["zero"]),
        zero_err=np.asarray(result["zero_err"]), zero_model=np.asarray(result["zero_model"]), used=used,
        zero_fn=result["zero_fn"])


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

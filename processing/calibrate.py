"""Photometric calibration against Gaia DR3 and the limiting magnitude.

Model:  m_cat = m_inst + ZP(x, y) + C * (BP - RP), where
m_inst = -2.5 log10(flux_total / EXPTIME) and ZP(x, y) is a polynomial of
order ``zp_spatial_order`` (lower with few calibrators), fitted by weighted
least squares with an intrinsic scatter and 4-sigma rejection
(``fitting.robust_fit``).  Reported ``zero_point`` is ZP at the frame
centre.  No fitted value is rounded.

The sources are paired with the reference stars once, before calibration
(``crossmatch.nearest_match``); the fit is given those pairs only.
"""
from dataclasses import dataclass, field

import numpy as np
from astropy.stats import mad_std

from .contract import FLAG_BLENDED, FLAG_SKY_POOR
from .errors import CalibrationError
from .fitting import robust_fit, surface_order, surface_terms
from .refcat import GAIA_MAG_COLUMN

MIN_CALIBRATORS = 5
#: with fewer unflagged calibrators, deblended and poor-sky ones are admitted
MIN_CLEAN_CALIBRATORS = 20
#: calibrators further than this many sigma (errors and intrinsic scatter) are rejected
REJECTION_SIGMA = 4.0


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
    reference_band: str              # the Gaia band fitted: G, BP or RP
    median_colour: float
    intrinsic_rms: float             # star-to-star scatter beyond the photometric errors (mag)
    has_colour: bool                 # False: no BP-RP in the catalogue, no colour term
    source_index: np.ndarray
    catalogue_mag: np.ndarray
    colour: np.ndarray               # BP-RP (0 when no colour term is fitted)
    zero: np.ndarray                 # catalogue minus instrumental magnitude
    zero_err: np.ndarray
    zero_model: np.ndarray           # the model at each calibrator, colour term included
    used: np.ndarray
    spatial_order: int
    shape: tuple
    fit: object = field(repr=False)  # fitting.LinearFit; the colour term is its last coefficient ...
    #: ... unless it was fixed to the instrument's registered value (``registered_colour_term``)
    colour_fixed: bool = False
    colour_term_source: str = "fit"

    def _surface(self, x, y):
        terms = surface_terms(np.atleast_1d(x), np.atleast_1d(y), self.shape, self.spatial_order)
        return np.column_stack([terms, np.zeros(len(terms))]) if self.has_colour and not self.colour_fixed else terms

    def zero_at(self, x, y):
        """ZP(x, y), the zero point at colour 0."""
        return self.fit.predict(self._surface(x, y))

    def zero_err_at(self, x, y):
        return self.fit.error(self._surface(x, y))

    @property
    def colour_spread(self):
        """Robust standard deviation of the kept calibrators' BP-RP (mag)."""
        return float(mad_std(self.colour[self.used])) if self.has_colour else 0.0

    def offset_at(self, x, y, colour):
        """Catalogue minus instrumental magnitude of sources at (x, y) of
        BP-RP ``colour``; a source without a colour (NaN) is calibrated at
        the calibrators' median colour."""
        known = np.where(np.isfinite(colour), colour, self.median_colour)
        return self.zero_at(x, y) + self.colour_term * known

    def error_at(self, x, y, colour):
        """The calibration's error (mag) for sources at (x, y) of BP-RP
        ``colour``, in quadrature: the zero point's and colour term's (with
        their covariance); the calibrators' star-to-star scatter beyond
        their measurement errors (flat field, colour-term mismatch), which
        any one star carries too; and for a source without a colour (NaN),
        the colour term times the calibrators' colour spread, the error of
        calibrating it at their median colour."""
        surface = surface_terms(np.atleast_1d(x), np.atleast_1d(y), self.shape, self.spatial_order)
        if not self.has_colour:
            return np.hypot(self.fit.error(surface), self.intrinsic_rms)
        known = np.where(np.isfinite(colour), colour, self.median_colour)
        unknown_colour = np.where(np.isfinite(colour), 0.0, self.colour_term * self.colour_spread)
        if self.colour_fixed:        # the zero point took the colour term at the calibrators' colours
            model = np.hypot(self.fit.error(surface), self.colour_term_err * (known - self.median_colour))
        else:
            model = self.fit.error(np.column_stack([surface, known]))
        return np.sqrt(model ** 2 + self.intrinsic_rms ** 2 + unknown_colour ** 2)


def reference_band(ref, band, warn):
    """The Gaia band to calibrate on: the band's own (G, BP or RP), else G
    when the catalogue lacks it (a G-only extract), with a warning."""
    wanted = band.gaia_band
    if wanted != "G" and np.isfinite(np.asarray(ref[GAIA_MAG_COLUMN[wanted]], float)).sum() < MIN_CALIBRATORS:
        warn(f"the reference catalogue has no Gaia {wanted} magnitudes: band {band.name} calibrated against"
             " Gaia G (the colour difference goes into the zero point's scatter)")
        return "G"
    return wanted


#: a frame's own colour term is poorly constrained with a larger error than
#: this, or calibrators spanning less BP-RP (robust standard deviation) ...
MAX_OWN_COLOUR_TERM_ERR, MIN_CALIBRATOR_COLOUR_SPREAD = 0.03, 0.2
#: ... and its instrument's registered value is used when that comes from
#: this many frames or more and is better known
MIN_REGISTERED_FRAMES = 3


def calibrate(phot, ref, match, band, config, shape, log, warn, registered=None):
    """Fit the zero point and colour term on the matched, usable reference
    stars; raises ``CalibrationError`` with the reason when it cannot.
    ``registered``: the instrument's colour term in the archive's registry
    ({colour_term, colour_term_err, n_images}) or None; a frame whose own
    colour term is poorly constrained is fitted with that one fixed.

    Calibrators are the unflagged pairs above ``min_calib_snr``; where fewer
    than ``MIN_CLEAN_CALIBRATORS`` are, deblended stars and stars with a
    poor sky annulus (crowded fields) are admitted too, with a warning.  The
    fit models an intrinsic scatter (up to ``config.max_intrinsic_rms``) on
    top of the photometric errors, so that only true outliers are rejected."""
    ref_band, cat_mag, colour, usable = _reference_magnitudes(ref, band, config, warn)
    has_colour = bool(np.isfinite(colour[usable]).all())
    keep = usable[match.ref_index] & np.isfinite(phot.m_inst[match.source_index]) \
        & np.isfinite(phot.e_inst[match.source_index])
    src, cat = match.source_index[keep], match.ref_index[keep]
    candidates = _calibrator_candidates(phot, src, config, warn)
    n_candidates = int(candidates.sum())
    if n_candidates < MIN_CALIBRATORS:
        raise CalibrationError(_no_calibrators(len(src), n_candidates, match.radius_arcsec, config))
    order = surface_order(config.zp_spatial_order, n_candidates)
    zero = cat_mag[cat] - phot.m_inst[src]
    pair_colour = colour[cat] if has_colour else np.zeros(len(src))
    design = surface_terms(phot.x[src], phot.y[src], shape, order)
    if has_colour:
        design = np.column_stack([design, pair_colour])
    fit = robust_fit(design, zero, phot.e_inst[src], candidates, REJECTION_SIGMA, config.max_intrinsic_rms)
    colour_term = float(fit.coeffs[-1]) if has_colour else 0.0
    colour_term_err = float(np.sqrt(fit.covariance[-1, -1])) if has_colour else np.nan
    fixed = has_colour and _use_registered(registered, colour_term_err, pair_colour[fit.keep])
    source = "fit"
    if fixed:
        own, own_err = colour_term, colour_term_err
        colour_term, colour_term_err = float(registered["colour_term"]), float(registered["colour_term_err"])
        source = f"instrument registry ({int(registered['n_images'])} frames)"
        design = design[:, :-1]                       # the surface terms, without the colour
        fit = robust_fit(design, zero - colour_term * pair_colour, phot.e_inst[src], candidates, REJECTION_SIGMA,
                         config.max_intrinsic_rms)
        warn(f"the frame's own colour term is poorly constrained ({own:+.3f} +/- {own_err:.3f}, calibrators"
             f" spanning {mad_std(pair_colour[candidates]):.2f} mag in BP-RP): its instrument's registered"
             f" {colour_term:+.4f} +/- {colour_term_err:.4f} (from {int(registered['n_images'])} frames) is used")
    n_used = int(fit.keep.sum())
    if n_used < MIN_CALIBRATORS:
        raise CalibrationError(f"the zero-point fit kept {n_used} of {n_candidates} calibrators after"
                               f" rejecting outliers ({MIN_CALIBRATORS} needed)")
    zero_model = fit.predict(design) + (colour_term * pair_colour if fixed else 0.0)
    cal = Calibration(
        zero_point=np.nan, zero_point_err=np.nan, colour_term=colour_term, colour_term_err=colour_term_err,
        n_calibrators=n_used, rms=float(mad_std((zero - zero_model)[fit.keep])),
        reference_band=ref_band, median_colour=float(np.median(pair_colour[fit.keep])),
        intrinsic_rms=fit.intrinsic, has_colour=has_colour, source_index=src, catalogue_mag=cat_mag[cat],
        colour=pair_colour, zero=zero, zero_err=phot.e_inst[src], zero_model=zero_model,
        used=fit.keep, spatial_order=order, shape=tuple(shape), fit=fit, colour_fixed=fixed,
        colour_term_source=source)
    centre = (0.5 * (shape[1] - 1), 0.5 * (shape[0] - 1))
    cal.zero_point, cal.zero_point_err = float(cal.zero_at(*centre)[0]), float(cal.zero_err_at(*centre)[0])
    log(f"zero point {cal.zero_point:.4f} +/- {cal.zero_point_err:.4f} mag, colour term {cal.colour_term:.4f}"
        f" +/- {cal.colour_term_err:.4f}, {n_used} of {n_candidates} calibrators, rms {cal.rms:.3f} mag,"
        f" intrinsic scatter {cal.intrinsic_rms:.3f} mag, spatial order {order}")
    return cal


def _use_registered(registered, own_err, colours):
    """Whether to fix the colour term to the instrument's registered one: the
    frame's own is poorly constrained (error or the calibrators' colour
    spread) and the registry's comes from enough frames and is better known."""
    if not registered or registered.get("colour_term") is None or registered.get("colour_term_err") is None:
        return False
    poorly = not own_err <= MAX_OWN_COLOUR_TERM_ERR or mad_std(colours) < MIN_CALIBRATOR_COLOUR_SPREAD
    return bool(poorly and registered.get("n_images", 0) >= MIN_REGISTERED_FRAMES
                and registered["colour_term_err"] < own_err)


def _reference_magnitudes(ref, band, config, warn):
    """(Gaia band, its magnitudes, BP-RP, usable): the reference stars in the
    calibration's magnitude range, with a colour where the catalogue has
    colours at all; raises ``CalibrationError`` when too few are usable."""
    ref_band = reference_band(ref, band, warn)
    cat_mag = np.asarray(ref[GAIA_MAG_COLUMN[ref_band]], dtype=float)
    colour = np.asarray(ref["phot_bp_mean_mag"] - ref["phot_rp_mean_mag"], dtype=float)
    usable = np.isfinite(cat_mag) & (cat_mag <= config.max_calib_mag) & (cat_mag >= config.min_calib_mag)
    if (np.isfinite(colour) & usable).sum() >= MIN_CALIBRATORS:
        usable &= np.isfinite(colour)
    else:
        warn("the reference catalogue has no BP-RP colours: no colour term (the zero point's scatter"
             " includes the stars' colours)")
    if usable.sum() < MIN_CALIBRATORS:
        raise CalibrationError(f"no calibrators: only {int(usable.sum())} reference stars with "
                               f"{config.min_calib_mag:g} <= {ref_band} <= {config.max_calib_mag:g}"
                               " in the field")
    return ref_band, cat_mag, colour, usable


def _calibrator_candidates(phot, src, config, warn):
    """Which matched sources may calibrate: the size of a star, above the S/N
    and unflagged, or, in crowded fields (fewer than
    ``MIN_CLEAN_CALIBRATORS``), deblended and poor-sky ones too."""
    bright = (phot.e_inst[src] < 1.0 / config.min_calib_snr) & phot.star_sized[src]
    clean = bright & (phot.flags[src] == 0)
    if clean.sum() >= MIN_CLEAN_CALIBRATORS:
        return clean
    crowded = bright & ((phot.flags[src] & ~(FLAG_BLENDED | FLAG_SKY_POOR)) == 0)
    if crowded.sum() > clean.sum():
        warn(f"{int(clean.sum())} clean calibrators: {int(crowded.sum() - clean.sum())} deblended or with a"
             " poor sky annulus (a crowded field) admitted too")
    return crowded


def _no_calibrators(n_matched, n_clean, radius_arcsec, config):
    return (f"no calibrators: {n_matched} stars matched the reference catalogue within"
            f" {radius_arcsec:.1f} arcsec, {n_clean} of them unsaturated, unblended and above"
            f" S/N {config.min_calib_snr:g} ({MIN_CALIBRATORS} needed)")


def empty_sky_positions(exclude, radius, n_max=2000, rng_seed=0):
    """Random (x, y) whose disc of ``radius`` pixels holds no excluded
    pixel (no source, mask or edge): at most ``n_max``, and few enough that
    the discs rarely overlap (a quarter of the free area)."""
    import sep_x as sep
    h, w = exclude.shape
    rng = np.random.default_rng(rng_seed)
    margin = radius + 2
    x = rng.uniform(margin, w - 1 - margin, 4 * n_max)
    y = rng.uniform(margin, h - 1 - margin, 4 * n_max)
    covered, _, _ = sep.sum_circle(exclude.astype(np.float32), x, y, radius, subpix=1)
    empty = covered == 0
    n = int(min(n_max, 0.25 * (~exclude).sum() / (np.pi * radius ** 2)))
    return x[empty][:n], y[empty][:n]


#: empty-sky positions a limiting magnitude needs
MIN_EMPTY_POSITIONS = 50


def limiting_magnitude(fluxes, exptime, zero_point, correction, nsigma=5.0):
    """``nsigma`` limiting magnitude from the scatter (robust std, ADU) of
    ``fluxes`` measured on empty sky, corrected to total flux by
    ``correction`` (mag) and calibrated at colour 0.  Returns (limit, sigma);
    NaN with fewer than ``MIN_EMPTY_POSITIONS`` measurements."""
    fluxes = np.asarray(fluxes)[np.isfinite(fluxes)]
    if fluxes.size < MIN_EMPTY_POSITIONS:
        return np.nan, np.nan
    sigma = float(mad_std(fluxes))
    return float(zero_point + correction - 2.5 * np.log10(nsigma * sigma / exptime)), sigma

"""Aperture photometry with masks, a clipped local-sky annulus and full errors.

Fluxes are in ADU on the background-subtracted image; the annulus removes the
residual sky left by the 2-D background map.  Errors combine source photons
(gain), sky and read noise (the measured background RMS), and the uncertainty
of the local sky level.
"""
import warnings
from dataclasses import dataclass

import numpy as np
import sep_x as sep
from astropy.stats import SigmaClippedStats

from .contract import FLAG_EDGE, FLAG_MASKED, FLAG_SATURATED, FLAG_SKY_POOR
from .fitting import fit_surface

MAG_PER_FLUX_ERR = 2.5 / np.log(10)   # 1.0857: d(mag) = 1.0857 d(flux)/flux
#: S/N in the total-flux aperture for aperture-correction stars: enough stars
#: for a spatial map matters more than the few brightest (they are weighted)
APCOR_MIN_SNR = 30.0
#: local-sky clipping (sigma); see ``local_sky``
SKY_CLIP = 3.0


@dataclass(frozen=True)
class Apertures:
    """Aperture radii (pixels) of one frame, from its FWHM."""
    reported: tuple            # the catalogue's mag_ap1..4
    calibration: float         # calibrated, corrected to total
    growth: float              # the aperture correction is measured to here, then the PSF model's
    annulus: tuple             # local sky, inner and outer radius
    core: float                # half a FWHM: with the others, the curve of growth for sizes

    @classmethod
    def for_fwhm(cls, fwhm, config):
        return cls(reported=tuple(r * fwhm for r in config.aperture_radii_fwhm),
                   calibration=config.calibration_radius_fwhm * fwhm,
                   growth=config.growth_radius_fwhm * fwhm,
                   annulus=tuple(r * fwhm for r in config.sky_annulus_fwhm), core=0.5 * fwhm)

    @property
    def measured(self):
        """Every radius measured, increasing, each once."""
        return sorted({self.core, *self.reported, self.calibration, self.growth})


@dataclass
class Photometry:
    """Aperture (and PSF) photometry of every source, instrumental:
    magnitudes are -2.5 log10(ADU/s)."""
    x: np.ndarray                  # windowed centroids, 0-based pixels
    y: np.ndarray
    fwhm: float                    # pixels
    apertures: Apertures
    inst: dict                     # radius -> (mag, err)
    snr: np.ndarray                # in the calibration aperture
    flags: np.ndarray
    m_inst: np.ndarray             # calibration aperture corrected to total
    e_inst: np.ndarray             # its star-to-star error: photometric and the correction's scatter
    crowding: np.ndarray           # neighbours' light (removed) / own light, in the calibration aperture
    apcor: float                   # the correction at the frame centre
    apcor_err: float
    exclude: np.ndarray            # pixels no sky or limit measurement may use
    sky_level: np.ndarray          # local sky per source (ADU/pixel)
    half_light: np.ndarray         # half-light radius within the growth aperture (px), neighbours removed
    psf_half_light: float          # the point sources' half-light radius (px), ``stellar_half_light``
    #: aperture.CorrectionMap from the calibration aperture to total flux
    total_map: object = None
    m_psf: np.ndarray | None = None
    e_psf: np.ndarray | None = None
    apcor_psf: float = np.nan
    #: aperture.CorrectionMap from PSF fluxes to the calibration aperture
    psf_map: object = None

    @property
    def star_sized(self):
        """Sources whose half-light radius is 0.5 to 1.5 times the point
        sources' (``stellar_half_light``): not galaxies, their knots, blends
        or cosmic rays."""
        ratio = self.half_light / self.psf_half_light
        return (ratio > 0.5) & (ratio < 1.5)

    @property
    def m_cal_aperture(self):
        """(mag, err) in the calibration aperture, not corrected."""
        return self.inst[self.apertures.calibration]


@dataclass
class LocalSky:
    level: np.ndarray      # residual sky per pixel (ADU)
    sigma: np.ndarray      # clipped standard deviation per pixel (ADU)
    npix: np.ndarray       # usable annulus pixels


def annulus_offsets(r_in, r_out):
    """Integer pixel offsets (dy, dx) whose centres lie in the annulus.

    All of them are used: the sky-level error adds to every aperture's noise
    in proportion to aperture area / annulus area."""
    n = int(np.ceil(r_out))
    dy, dx = np.mgrid[-n:n + 1, -n:n + 1]
    r = np.hypot(dx, dy)
    keep = (r >= r_in) & (r <= r_out)
    return dy[keep], dx[keep]


def local_sky(data_sub, x, y, r_in, r_out, exclude):
    """Sigma-clipped (3 sigma) mean and std of each source's sky annulus.

    The clipped mean, not the median: clipping removes resolved neighbours,
    while the light of unresolved faint stars, which every aperture also
    holds, skews the sky distribution and pulls the median below it (a bias
    that grows with aperture area: 0.008 mag in a 5-FWHM aperture here).

    ``exclude`` marks pixels not to use (masked pixels and source footprints).
    All annuli are gathered into one (n_sources, n_pixels) array, so the cost
    is a few vectorised passes whatever the number of sources.
    """
    h, w = data_sub.shape
    dy, dx = annulus_offsets(r_in, r_out)
    level = np.zeros(x.size)
    sigma = np.zeros(x.size)
    npix = np.zeros(x.size, dtype=int)
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    for start in range(0, x.size, 2000):            # bounded memory
        sl = slice(start, start + 2000)
        py = iy[sl, None] + dy[None, :]
        px = ix[sl, None] + dx[None, :]
        inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        pyc, pxc = np.clip(py, 0, h - 1), np.clip(px, 0, w - 1)
        values = data_sub[pyc, pxc]
        unusable = ~inside | exclude[pyc, pxc]
        level[sl], sigma[sl] = _clipped_mean_and_std(np.ma.MaskedArray(values, unusable))
        npix[sl] = (~unusable).sum(axis=1)
    return LocalSky(level=level, sigma=sigma, npix=npix), dy.size


def _clipped_mean_and_std(annuli):
    """Per row of the masked (n_sources, n_pixels) ``annuli``: the mean and
    standard deviation after ``SKY_CLIP``-sigma clipping about the median
    (``sigma_clipped_stats`` without its median of the clipped pixels,
    which numpy computes row by row); NaN for a row with no pixel left."""
    if annuli.mask.all():
        return np.nan, np.nan
    stats = SigmaClippedStats(annuli, sigma=SKY_CLIP, maxiters=5, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # rows with no pixel left
        return (np.ma.filled(np.ma.asarray(stats.mean()), np.nan),
                np.ma.filled(np.ma.asarray(stats.std()), np.nan))


def measure(image, x, y, radii, rms, gain, masks, sky, n_annulus_nominal, own_light=None):
    """Fluxes, errors and flags for every radius (pixels).

    ``image`` is the background-subtracted frame, or that frame with every
    fitted source's PSF model removed; then ``own_light`` (radius -> each
    source's model flux within it) puts the source's own light back, so
    each aperture holds the source without its neighbours.

    Returns dict radius -> (flux, flux_err), and per-source flags.  The
    errors combine the source's photons, sky and read noise (the measured
    background RMS) and the local sky level's uncertainty.  The apertures
    are concentric, so a masked, truncated or saturated pixel in any of
    them is one in the largest: the flags come from that aperture.
    """
    results = {}
    sky_level = np.nan_to_num(sky.level)
    sky_var_per_pix = np.where(sky.npix > 0, sky.sigma ** 2 / np.maximum(sky.npix, 1), 0.0)
    for r in radii:
        summed, background_err, sep_flag = sep.sum_circle(image, x, y, r, err=rms, mask=masks.bad, subpix=5)
        area = np.pi * r ** 2
        flux = summed + (0.0 if own_light is None else own_light[r]) - sky_level * area
        flux_err = np.sqrt(background_err ** 2 + np.clip(flux, 0, None) / gain
                           + area ** 2 * np.nan_to_num(sky_var_per_pix))
        results[r] = (flux, flux_err)
        if r == max(radii):
            outer_flag = sep_flag
    saturated_sum, _, _ = sep.sum_circle(masks.saturated.astype(np.float32), x, y, max(radii), subpix=1)
    flags = (np.where(outer_flag & sep.APER_HASMASKED, FLAG_MASKED, 0)
             | np.where(outer_flag & sep.APER_TRUNC, FLAG_EDGE, 0)
             | np.where(saturated_sum > 0, FLAG_SATURATED, 0)
             | np.where(sky.npix < 0.5 * n_annulus_nominal, FLAG_SKY_POOR, 0))
    return results, flags.astype(np.int32)


def neighbour_fraction(fit, own_light, x, y, radius):
    """Neighbours' light (their PSF models) within ``radius`` of each
    source over the source's own: what the apertures had removed.  Zero
    without a PSF fit; infinite for a source without its own model."""
    if fit is None:
        return np.zeros(len(x))
    everything = sep.sum_circle(fit.model, x, y, radius, subpix=5)[0]
    own = own_light[radius]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(own > 0, (everything - own) / own, np.inf)


def stellar_half_light(half_light, usable, width=1.25, min_fraction=0.05, min_count=5):
    """The half-light radius (px) of the point sources: the smallest group
    of ``usable`` sources whose radii lie within a factor ``width`` of each
    other and that holds at least ``min_fraction`` of them (and
    ``min_count``), refined to the median within that factor of its median.
    No real source is smaller than the PSF, so the stars are the tight
    lower envelope of the sizes, however many galaxies, knots or blends
    outnumber them (M51's knots are 15 to 1 in frame 09).  NaN with fewer
    than ``min_count`` usable sources or without such a group."""
    radii = np.sort(half_light[usable & np.isfinite(half_light) & (half_light > 0)])
    need = max(min_count, int(np.ceil(min_fraction * radii.size)))
    if radii.size < need:
        return np.nan
    in_window = np.searchsorted(radii, width * radii, side="right") - np.arange(radii.size)
    if not (in_window >= need).any():
        return np.nan
    first = int(np.argmax(in_window >= need))
    centre = float(np.median(radii[first:first + in_window[first]]))
    for _ in range(3):
        centre = float(np.median(radii[(radii > centre / width) & (radii < centre * width)]))
    return centre


def half_light_radius(fluxes):
    """Radius (px) holding half of the largest aperture's flux, from the
    curve of growth (dict radius -> (flux, err), linear between radii and
    from zero at the centre); NaN where the flux is not positive."""
    radii = np.array(sorted(fluxes))
    growth = np.array([fluxes[r][0] for r in radii])              # (n_radii, n_sources)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = growth / growth[-1]
    fraction = np.vstack([np.zeros(fraction.shape[1]), fraction])
    radii = np.concatenate([[0.0], radii])
    beyond = np.argmax(fraction >= 0.5, axis=0).clip(1, len(radii) - 1)
    cols = np.arange(fraction.shape[1])
    f0, f1 = fraction[beyond - 1, cols], fraction[beyond, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = radii[beyond - 1] + (0.5 - f0) / (f1 - f0) * (radii[beyond] - radii[beyond - 1])
    return np.where(growth[-1] > 0, radius, np.nan)


def circle_sum(data_sub, x, y, radius):
    """Sums (ADU) in circles of ``radius`` pixels, with sub-pixel edges."""
    return sep.sum_circle(data_sub, x, y, radius, subpix=5)[0]


def correction_stars(point_like, flags, snr, alone):
    """Stars fit to measure an aperture correction: point-like, unflagged,
    ``alone`` (no neighbour, or its light removed and small) and with S/N
    above ``APCOR_MIN_SNR`` in the larger aperture (whose sky noise
    dominates the correction's error; the fit weights each star by it)."""
    return point_like & (flags == 0) & alone & (snr > APCOR_MIN_SNR)


def instrumental_mag(flux, flux_err, exptime):
    """-2.5 log10(flux / exptime) and its error; NaN for non-positive flux."""
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = flux > 0
        mag = np.where(positive, -2.5 * np.log10(np.where(positive, flux, 1.0) / exptime), np.nan)
        err = np.where(positive, MAG_PER_FLUX_ERR * flux_err / np.where(positive, flux, 1.0), np.nan)
    return mag, err


@dataclass
class CorrectionMap:
    """A magnitude correction over the frame (fitted, or one value), its
    fit error and the star-to-star scatter the fit found beyond the
    photometric errors (a PSF that varies on smaller scales than the map)."""
    how: str
    n_stars: int
    intrinsic: float
    _at: object = None          # (x, y) -> correction
    _error: object = None       # (x, y) -> its error

    def at(self, x, y):
        return self._at(np.asarray(x), np.asarray(y))

    def error(self, x, y):
        return self._error(np.asarray(x), np.asarray(y))

    def star_error(self, photometric):
        """A corrected magnitude's error from star to star: the photometric
        one and the stars' scatter about the map.  The map's own error
        (``error``) is shared by neighbouring stars and left out: a zero
        point fitted on magnitudes corrected with this map absorbs it."""
        return np.hypot(photometric, self.intrinsic)

    def shifted(self, offset, offset_error):
        """This map plus a constant ``offset`` (mag) known to ``offset_error``."""
        return CorrectionMap(self.how, self.n_stars, self.intrinsic, lambda x, y: self.at(x, y) + offset,
                             lambda x, y: np.hypot(self.error(x, y), offset_error))

    @classmethod
    def constant(cls, value, error):
        return cls("PSF model", 0, 0.0, lambda x, y: np.full(np.shape(x), value),
                   lambda x, y: np.full(np.shape(x), error))


def aperture_correction_map(mag_from, mag_to, err, use, x, y, shape, max_order=2):
    """Spatially varying correction from ``mag_from`` to ``mag_to``: a 2-D
    polynomial in (x, y), weighted (errors plus a fitted intrinsic scatter:
    without it the few brightest stars, with tiny errors, would set the
    correction alone), with 3-sigma clipping (``fitting.fit_surface``).  The
    PSF changes across a real field, and so does the flux fraction in a
    fixed aperture.  The order drops to what the number of stars supports
    (10 per coefficient).  Returns a ``CorrectionMap``; its error comes from
    the fit's covariance with the intrinsic scatter included."""
    surface = fit_surface(x, y, mag_to - mag_from, err, use, shape, max_order)
    return CorrectionMap(f"order-{surface.order} map from {surface.n_points} stars", surface.n_points,
                         surface.fit.intrinsic, surface, surface.error)

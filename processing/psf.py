"""Empirical PSF (photutils ePSF) and PSF photometry of every source.

The ePSF is built with photutils from isolated, unsaturated, bright stars.
The fit keeps each source at its windowed centroid and solves for all fluxes
at once: one sparse linear least-squares problem over every pixel within the
fit radius of any source, so overlapping neighbours are fitted together
(grouping without groups) and no Python loop runs per source.  photutils'
own ``PSFPhotometry`` fits positions too but costs about 2 ms per source,
twenty times the budget of a 6000-star frame.
"""
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.nddata import NDData
from astropy.table import Table
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import lsqr

OVERSAMPLING = 2
#: fewer isolated unsaturated stars than this: no PSF model
MIN_PSF_STARS = 5


#: Moffat beta assumed for the PSF's wings when no ePSF could be built
DEFAULT_BETA = 3.0
#: a PSF narrower than this (px) is undersampled (a DSLR colour plane, a
#: short focal length): its FWHM measures poorly, and apertures and
#: centroid windows need at least this
MIN_SAMPLED_FWHM = 1.5


@dataclass
class PSFModel:
    """The frame's PSF: the photutils ePSF (None when too few stars) and the
    FWHM (pixels) measured on it, or the moments' estimate without it; the
    Moffat beta of its wings."""
    epsf: object
    fwhm: float
    star_index: np.ndarray          # the detections it was built from
    beta: float = DEFAULT_BETA

    def encircled_energy(self, radius):
        """Fraction of a star's flux within ``radius`` pixels (the Moffat model)."""
        alpha = self.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / self.beta) - 1.0))
        return 1.0 - (1.0 + (np.asarray(radius) / alpha) ** 2) ** (1.0 - self.beta)

    def magnitude_correction(self, r_from, r_to):
        """m(r_to) - m(r_from) of a point source, from the Moffat model."""
        return float(-2.5 * np.log10(self.encircled_energy(r_to) / self.encircled_energy(r_from)))


def select_psf_stars(x, y, flux, peak, point_like, fwhm, saturate, shape, max_stars=40):
    """Indices of bright, unsaturated, point-like stars with no close neighbour."""
    from .detect import isolated
    h, w = shape
    half = 4 * fwhm
    inside = (x > half) & (x < w - 1 - half) & (y > half) & (y < h - 1 - half)
    ok = inside & point_like & (peak < 0.5 * saturate) & isolated(x, y, 4 * fwhm)
    idx = np.where(ok)[0]
    return idx[np.argsort(-flux[idx])][:max_stars]


def build_epsf(data_sub, x, y, fwhm):
    """photutils ePSF (oversampled by 2: with tens of stars a finer grid is noisy) from the stars at (x, y)."""
    from photutils.psf import EPSFBuilder, extract_stars
    size = int(2 * np.ceil(3.5 * fwhm) + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stars = extract_stars(NDData(data_sub), Table(dict(x=x, y=y)), size=size)
        epsf, _ = EPSFBuilder(oversampling=OVERSAMPLING, maxiters=3, progress_bar=False)(stars)
    return epsf


def epsf_fwhm(epsf):
    """(FWHM in native pixels, beta) of a circular Moffat fitted to the oversampled ePSF.

    The ePSF includes the pixel response, as every measured FWHM does.  (The
    area above half maximum of the ePSF array is biased low by the builder's
    smoothing: 2.8 instead of 3.2 px on simulated Moffat stars.)
    """
    from astropy.modeling import fitting, models
    data = epsf.data
    n = data.shape[0]
    yy, xx = np.mgrid[:n, :n]
    guess = models.Moffat2D(amplitude=data.max(), x_0=0.5 * (n - 1), y_0=0.5 * (n - 1),
                            gamma=0.25 * n / 3, alpha=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fitting.LevMarLSQFitter()(guess, xx, yy, data)
    beta = float(fit.alpha.value)
    return float(abs(fit.fwhm) / OVERSAMPLING), beta if 1.5 < beta < 20 else DEFAULT_BETA


def _sample(filtered, dx, dy):
    """ePSF value at native-pixel offsets (dx, dy) from the star centre."""
    n = filtered.shape[0]
    c = 0.5 * (n - 1)
    coords = np.array([dy.ravel() * OVERSAMPLING + c, dx.ravel() * OVERSAMPLING + c])
    return ndimage.map_coordinates(filtered, coords, order=3, mode="constant", cval=0.0,
                                   prefilter=False).reshape(dx.shape)


def _stamps(x, y, radius, shape):
    """Pixels within ``radius`` of each source: (py, px) clipped to the image,
    shape (n_sources, n_pixels), and whether each is really on it."""
    h, w = shape
    n = int(np.ceil(radius))
    oy, ox = np.mgrid[-n:n + 1, -n:n + 1]
    keep = np.hypot(ox, oy) <= radius
    px = np.round(x).astype(int)[:, None] + ox[keep][None, :]
    py = np.round(y).astype(int)[:, None] + oy[keep][None, :]
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    return np.clip(py, 0, h - 1), np.clip(px, 0, w - 1), inside


def fit_fluxes(data_sub, rms, gain, epsf, x, y, fit_radius, bad, local_sky):
    """Simultaneous weighted linear fit of all source fluxes at fixed positions.

    The fit uses the pixels within ``fit_radius`` of any source; on them,
    every source's model reaches as far as the ePSF does, so a neighbour's
    wings inside a source's disc are fitted as the neighbour's light rather
    than added to the source.

    ``local_sky`` (ADU/pixel per source, the aperture annulus level) is
    removed as the apertures remove it: for a linear fit a constant offset s
    adds s * sum(w P) / sum(w P^2) to the flux.
    Returns (flux, flux_err, ok).  Flux is in the ePSF's normalisation; an
    aperture correction (measured by the caller) ties it to the apertures.
    """
    h, w = data_sub.shape
    filtered = ndimage.spline_filter(epsf.data.astype(np.float64), order=3)
    # each source's own disc: the fit's pixels, its coverage, weights and error
    py, px, inside = _stamps(x, y, fit_radius, (h, w))
    usable = inside & ~bad[py, px]
    full = _sample(filtered, px - x[:, None], py - y[:, None])   # native samples sum to 1
    model = np.where(usable, full, 0.0)
    sigma = rms[py, px].astype(np.float64)
    in_fit = np.zeros(h * w, dtype=bool)
    in_fit[(py * w + px)[usable]] = True

    # the design matrix: every source's ePSF over the fit pixels it reaches
    extent = max(fit_radius, (epsf.data.shape[0] // 2) / OVERSAMPLING)
    my, mx, m_inside = _stamps(x, y, extent, (h, w))
    flat = my * w + mx
    use = m_inside & in_fit[flat]
    col = np.broadcast_to(np.arange(x.size)[:, None], mx.shape)[use]
    values = _sample(filtered, mx[use] - x[col], my[use] - y[col])
    pixels, row = np.unique(flat[use], return_inverse=True)
    weight = 1.0 / rms.ravel()[pixels].astype(np.float64)
    design = coo_matrix((values * weight[row], (row, col)), shape=(pixels.size, x.size)).tocsr()
    target = data_sub.ravel()[pixels] * weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flux = lsqr(design, target, atol=1e-10, btol=1e-10, iter_lim=2000)[0]

    pw = (model / sigma ** 2).sum(axis=1)
    p2w = (model ** 2 / sigma ** 2).sum(axis=1)
    flux = flux - np.nan_to_num(local_sky) * pw / np.maximum(p2w, 1e-30)

    # per-source variance (neighbours' covariance neglected): sky, read noise
    # and the source's own photons, for the least-squares estimator at fixed weights
    var_pix = sigma ** 2 + np.clip(flux[:, None] * model, 0, None) / gain
    var = (model ** 2 / sigma ** 4 * var_pix).sum(axis=1) / np.maximum(p2w, 1e-30) ** 2
    coverage = model.sum(axis=1) / np.maximum(full.sum(axis=1), 1e-30)
    ok = (p2w > 0) & np.isfinite(flux) & (coverage > 0.7)
    return flux, np.sqrt(var), ok

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

#: the ePSF's samples per pixel for a PSF narrower than SHARP_PSF_FWHM (px):
#: with two, such a star's PSF flux depended on its sub-pixel position by up
#: to 0.85 %, with three (from 100 stars) by 0.2 % on the frame measured
#: then, up to 1.6 % on others until ``smoothed``; a wider PSF is smooth on
#: a pixel, and three samples per pixel leave its wide ePSF too noisy (its
#: PSF magnitudes scattered by 0.15 mag about the apertures' at 5 px)
SHARP_OVERSAMPLING, WIDE_OVERSAMPLING, SHARP_PSF_FWHM = 3, 2, 4.0


def oversampling_of(epsf):
    """The ePSF's samples per native pixel."""
    return int(np.atleast_1d(epsf.oversampling)[0])
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
    #: (x, y) -> the PSF's stretch over the ePSF (0: as built; 0.05: 5 %
    #: wider), measured on bright stars (``measure_stretch``); None: uniform
    stretch: object = None

    def stretch_at(self, x, y):
        return None if self.stretch is None else self.stretch(x, y)

    def encircled_energy(self, radius):
        """Fraction of a star's flux within ``radius`` pixels (the Moffat model)."""
        alpha = self.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / self.beta) - 1.0))
        return 1.0 - (1.0 + (np.asarray(radius) / alpha) ** 2) ** (1.0 - self.beta)

    def central_contrast(self):
        """A star centred on a pixel: that pixel's value over the median of
        its eight neighbours (the ePSF's, else the Moffat model's)."""
        from .detect import moffat_contrast
        if self.epsf is None:
            return moffat_contrast(self.fwhm, self.beta)
        dy, dx = np.mgrid[-1:2, -1:2].astype(float)
        values = _sample(ndimage.spline_filter(self.epsf.data.astype(np.float64), order=3), dx, dy,
                         oversampling_of(self.epsf))
        return float(values[1, 1] / np.median(np.delete(values.ravel(), 4)))

    def curve_of_growth(self, radii):
        """Fraction of the ePSF's flux (its native samples sum to 1) within
        each of ``radii`` (px), over the pixels a fit's model image renders
        (within the ePSF's extent of the star's nearest pixel centre),
        averaged over sub-pixel phases."""
        import sep_x as sep
        filtered = ndimage.spline_filter(self.epsf.data.astype(np.float64), order=3)
        n = int(np.ceil(epsf_extent(self.epsf)))
        oy, ox = np.mgrid[-n:n + 1, -n:n + 1].astype(float)
        rendered = np.hypot(ox, oy) <= epsf_extent(self.epsf)
        fractions = []
        phases = (-0.375, -0.125, 0.125, 0.375)
        oversampling = oversampling_of(self.epsf)
        for phase_x, phase_y in ((px, py) for px in phases for py in phases):
            stamp = np.ascontiguousarray(np.where(rendered, _sample(filtered, ox - phase_x, oy - phase_y, oversampling),
                                                  0.0))
            sums, _, _ = sep.sum_circle(stamp, np.full(len(radii), n + phase_x), np.full(len(radii), n + phase_y),
                                        np.asarray(radii, dtype=float), subpix=5)
            fractions.append(sums)
        return np.mean(fractions, axis=0)

    def to_total(self, radius):
        """m(total) - m(radius) of a point source: the ePSF's curve of growth
        to the edge of its stamp, the Moffat model's wings beyond (without an
        ePSF, the Moffat model alone)."""
        if self.epsf is None:
            return float(2.5 * np.log10(self.encircled_energy(radius)))
        extent = epsf_extent(self.epsf)
        inside, stamp = self.curve_of_growth([radius, extent])
        return float(2.5 * np.log10(inside / stamp * self.encircled_energy(extent)))

    def magnitude_correction(self, r_from, r_to):
        """m(r_to) - m(r_from) of a point source, from the Moffat model."""
        return float(-2.5 * np.log10(self.encircled_energy(r_to) / self.encircled_energy(r_from)))


#: a PSF star has no neighbour within ISOLATION_FWHM and no brighter one
#: within BRIGHTER_ISOLATION_FWHM: a brighter star's wings at 6 FWHM can
#: outshine the PSF star's own at 3.5 FWHM, its cutout's edge (next to
#: saturated stars they made rings in the ePSF and doubled the light it put
#: beyond the growth radius); preferring such stars, or a tenfold brighter
#: threshold, let a galaxy's knots into the PSF stars of a frame of M51
ISOLATION_FWHM, BRIGHTER_ISOLATION_FWHM = 4.0, 8.0


#: an ePSF that diverged is built again from the PSF stars of this
#: detection S/N (their matched filter's peak) or more: EPSFBuilder scales
#: every star to unit flux and re-centres it, and on a sparse 560-pixel
#: frame the faint ones made its lobes hold 1 to 50 times its flux (from
#: the 22 stars of S/N 50 up: 0.1)
MIN_PSF_STAR_SNR = 50.0


#: ePSF stars: the brightest up to MAX_PSF_STARS, in a crowded field up to
#: CROWDED_MAX_PSF_STARS.  There every cutout loses the samples its
#: neighbours cover: on a simulated 15 000-star 2048^2 frame an ePSF of 100
#: stars left PSF magnitudes of S/N > 100 scattered 1.3x as much as the
#: apertures' (scatter / error 1.34 and 1.44 at S/N 100-300 and above),
#: one of 200 stars 0.97x (1.12, 0.97).  Elsewhere 200 stars gained less
#: and cost the 4096^2 benchmark 0.45 s.
MAX_PSF_STARS, CROWDED_MAX_PSF_STARS = 100, 200


def select_psf_stars(x, y, flux, peak, point_like, fwhm, saturate, shape, max_stars=MAX_PSF_STARS):
    """Indices of the brightest (up to ``max_stars``) unsaturated point-like
    stars with no neighbour within ``ISOLATION_FWHM`` and no brighter one
    within ``BRIGHTER_ISOLATION_FWHM``."""
    from .detect import has_brighter_neighbour, isolated
    h, w = shape
    half = 4 * fwhm
    inside = (x > half) & (x < w - 1 - half) & (y > half) & (y < h - 1 - half)
    flux = np.asarray(flux)
    ok = (inside & point_like & (peak < 0.5 * saturate) & isolated(x, y, ISOLATION_FWHM * fwhm)
          & ~has_brighter_neighbour(x, y, flux, BRIGHTER_ISOLATION_FWHM * fwhm))
    idx = np.flatnonzero(ok)
    return idx[np.argsort(-flux[idx])][:max_stars]


#: neighbours are left out of a PSF star's cutout within this many times
#: their sep ellipse (a, b): their cores and inner wings
NEIGHBOUR_SCALE = 3.0


def build_epsf(data_sub, x, y, fwhm, sky_level, neighbours):
    """photutils ePSF (``SHARP_OVERSAMPLING`` or ``WIDE_OVERSAMPLING``
    samples per pixel) from the stars at (x, y), each with its local sky
    (ADU/pixel) removed first and the other sources' cores masked
    (``_neighbour_weights``; ``neighbours`` is sep's catalogue of all
    detections): a pedestal or a neighbour left in the cutouts would become
    part of the model, which the PSF fits would then take from every
    neighbour.  A star whose own centre a neighbour's ellipse covers is
    left out."""
    from photutils.psf import extract_stars
    size = int(2 * np.ceil(3.5 * fwhm) + 1)
    oversampling = SHARP_OVERSAMPLING if fwhm < SHARP_PSF_FWHM else WIDE_OVERSAMPLING
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cutouts = extract_stars(NDData(data_sub), Table(dict(x=x, y=y, sky=sky_level)), size=size).all_stars
        weights = [_neighbour_weights(star, neighbours) for star in cutouts]
        clear = [weight[tuple(np.round(star.cutout_center[::-1]).astype(int))] > 0
                 for star, weight in zip(cutouts, weights)]
        cutouts, sky_level, weights = ([v for v, ok in zip(values, clear) if ok]
                                       for values in (cutouts, sky_level, weights))
        epsf = _epsf_of(cutouts, sky_level, weights, oversampling)
        if not np.isfinite(epsf.data).all():     # some sample covered by neighbours in every cutout
            epsf = _epsf_of(cutouts, sky_level, [None] * len(cutouts), oversampling)
    return epsf


def _epsf_of(cutouts, sky_level, weights, oversampling):
    """photutils' ePSF of the cutouts less their sky levels, with these
    weights (0: not used); the stars' values are combined with a
    median-centred 3-sigma clip whose sigma is the MAD's, so that one star's
    cosmic ray or neighbour among the few that fall on an oversampled
    pixel is rejected."""
    from astropy.stats import SigmaClip
    from photutils.psf import EPSFBuilder, EPSFStar, EPSFStars
    stars = EPSFStars([EPSFStar(star.data - level, weights=weight, cutout_center=star.cutout_center,
                                origin=star.origin) for star, level, weight in zip(cutouts, sky_level, weights)])
    epsf, _ = EPSFBuilder(oversampling=oversampling, maxiters=3, progress_bar=False,
                          sigma_clip=SigmaClip(sigma=3.0, stdfunc="mad_std"))(stars)
    return epsf


#: An ePSF from EPSFBuilder (its 'quartic' smoothing, Anderson & King's,
#: made for four samples per pixel) keeps the noise of its stars at the
#: period of the pixel grid: on simulated 2048^2 frames at a 3.2-px FWHM
#: (three samples per pixel, 100 stars) a star's PSF flux changed with its
#: sub-pixel position by up to +/-1.6 %, and PSF magnitudes of S/N > 100
#: scattered 1.4-3.0x as much as the apertures'.  Smoothed once more with
#: the quadratic kernel (``quadratic_kernel``): 1.0-1.5x, and their errors
#: match their scatter.  The smoothing widens the ePSF by about its own
#: five samples, too much for a PSF of fewer than SMOOTHING_MIN_SAMPLES
#: samples across its FWHM (real frame 04's 1.3-px PSF, smoothed so in the
#: builder, put 0.1 mag more of a star's light beyond the growth aperture):
#: those keep the ePSF as built.
SMOOTHING_MIN_SAMPLES = 6


def quadratic_kernel(size=5):
    """The ``size`` x ``size`` kernel whose convolution gives, at each
    sample, the value at its centre of the least-squares quadratic surface
    through the samples around it (a 2-D Savitzky-Golay filter; EPSFBuilder's
    'quadratic' smoothing kernel)."""
    offsets = np.arange(size) - size // 2
    y, x = (grid.ravel() for grid in np.meshgrid(offsets, offsets, indexing="ij"))
    design = np.column_stack([np.ones(x.size), x, y, x * x, x * y, y * y])
    return (design @ np.linalg.pinv(design))[x.size // 2].reshape(size, size)


def smoothed(epsf, fwhm):
    """``epsf`` convolved with ``quadratic_kernel`` (its flux kept) when the
    PSF of FWHM ``fwhm`` (px) has at least ``SMOOTHING_MIN_SAMPLES``
    samples across its FWHM, else ``epsf`` itself."""
    from photutils.psf import ImagePSF
    oversampling = oversampling_of(epsf)
    if fwhm * oversampling < SMOOTHING_MIN_SAMPLES:
        return epsf
    data = ndimage.convolve(epsf.data, quadratic_kernel())
    return ImagePSF(data=data * (epsf.data.sum() / data.sum()), oversampling=oversampling, fill_value=0.0)


def _neighbour_weights(star, objs):
    """An ``EPSFStar``'s weights: 0 on the other sources' ellipses
    (``NEIGHBOUR_SCALE``) within its cutout, 1 elsewhere."""
    import sep_x as sep
    h, w = star.data.shape
    x0, y0 = star.origin
    cx, cy = x0 + star.cutout_center[0], y0 + star.cutout_center[1]
    reach = np.hypot(w, h) / 2 + NEIGHBOUR_SCALE * objs["a"]
    distance = np.hypot(objs["x"] - cx, objs["y"] - cy)
    near = objs[(distance < reach) & (distance > 1.0)]
    mask = np.zeros((h, w), dtype=bool)
    if len(near):
        sep.mask_ellipse(mask, near["x"] - x0, near["y"] - y0, near["a"], near["b"], near["theta"],
                         r=NEIGHBOUR_SCALE)
    return (~mask).astype(float)


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
    return float(abs(fit.fwhm) / oversampling_of(epsf)), beta if 1.5 < beta < 20 else DEFAULT_BETA


def _sample(filtered, dx, dy, oversampling):
    """ePSF value at native-pixel offsets (dx, dy) from the star centre
    (``filtered``: its spline coefficients, ``oversampling`` samples per pixel)."""
    n = filtered.shape[0]
    c = 0.5 * (n - 1)
    coords = np.array([dy.ravel() * oversampling + c, dx.ravel() * oversampling + c])
    return ndimage.map_coordinates(filtered, coords, order=3, mode="constant", cval=0.0,
                                   prefilter=False).reshape(dx.shape)


@dataclass
class Stamps:
    """Pixels within ``radius`` of each source's nearest pixel centre, as
    arrays (n_sources, n_pixels): the pixel indices clipped to the image,
    whether each is really on it, the offsets of the pixel centres from
    the source (off the image too); and per stamp pixel its integer offset
    from that nearest pixel centre."""
    py: np.ndarray
    px: np.ndarray
    inside: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    grid_x: np.ndarray         # (n_pixels,) integer offsets
    grid_y: np.ndarray

    @property
    def distance(self):
        """Each stamp pixel's distance (px) from the nearest pixel centre to the source."""
        return np.hypot(self.grid_x, self.grid_y)


def _stamps(x, y, radius, shape):
    """The ``Stamps`` of radius ``radius`` around sources at (x, y) on a frame of ``shape``."""
    h, w = shape
    n = int(np.ceil(radius))
    oy, ox = np.mgrid[-n:n + 1, -n:n + 1]
    keep = np.hypot(ox, oy) <= radius
    cx, cy = np.round(x).astype(int), np.round(y).astype(int)
    px = cx[:, None] + ox[keep][None, :]
    py = cy[:, None] + oy[keep][None, :]
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    return Stamps(np.clip(py, 0, h - 1), np.clip(px, 0, w - 1), inside, px - np.asarray(x)[:, None],
                  py - np.asarray(y)[:, None], ox[keep], oy[keep])


@dataclass
class PSFFit:
    """Fluxes of every source from one simultaneous fit, and the model image."""
    flux: np.ndarray           # ADU, in the ePSF's normalisation (its native samples sum to 1)
    flux_err: np.ndarray       # ADU: sky, read noise and the source's own photons, times chi when above one
    ok: np.ndarray             # the fit covered enough of the source's pixels
    sky_weight: np.ndarray     # a residual sky of s ADU/pixel adds s * sky_weight to a flux
    model: np.ndarray          # every fitted source rendered over its whole ePSF (ADU)
    stamps: Stamps             # where each source's model is ...
    values: np.ndarray         # ... and its values there for unit flux
    chi: np.ndarray            # sqrt(reduced chi^2) of the fit over each source's pixels

    def sky_corrected(self, sky_level):
        """Fluxes with the residual sky (ADU/pixel per source) removed."""
        return self.flux - np.nan_to_num(sky_level) * self.sky_weight

    def own_light(self, radii, index=None):
        """Each source's (or those of ``index``) own model flux (ADU) within
        each of ``radii`` (dict radius -> array), summed exactly as sep sums
        an aperture: the stamps are laid side by side in one image and
        measured there."""
        import sep_x as sep
        st = self.stamps
        index = np.arange(len(self.flux)) if index is None else np.asarray(index)
        half = int(max(np.abs(st.grid_x).max(), np.ceil(max(radii)) + 1))
        side = 2 * half + 1
        n = len(index)
        columns = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / columns))
        tiles = np.zeros((rows * columns, side, side))
        flux = np.where(self.ok, self.flux, 0.0)[index]
        tiles[:n][:, st.grid_y + half, st.grid_x + half] = self.values[index] * flux[:, None]
        mosaic = np.ascontiguousarray(tiles.reshape(rows, columns, side, side).transpose(0, 2, 1, 3)
                                      .reshape(rows * side, columns * side))
        # the source sits at -(dx, dy) from its nearest pixel centre, the tile's centre
        centre = st.distance.argmin()
        k = np.arange(n)
        cx = (k % columns) * side + half - st.dx[index, centre]
        cy = (k // columns) * side + half - st.dy[index, centre]
        return {r: sep.sum_circle(mosaic, cx, cy, r, subpix=5)[0] for r in radii}


def negative_fraction(epsf):
    """The ePSF's negative samples' sum over its total (noise in a sound one)."""
    data = np.asarray(epsf.data, dtype=np.float64)
    return float(-data[data < 0].sum() / data.sum())


def epsf_extent(epsf):
    """Radius (native px) of the ePSF's stamp: where the model ends."""
    return (epsf.data.shape[0] // 2) / oversampling_of(epsf)


def stretch_derivative(epsf):
    """d/ds at s = 1 of the ePSF stretched by a factor s about its centre,
    its flux kept: P(r/s)/s^2 -> -(2 P + X dP/dX + Y dP/dY), on the ePSF's
    oversampled grid.  A PSF a fraction e wider than the ePSF is P + e D."""
    data = epsf.data.astype(np.float64)
    n = data.shape[0]
    grid_y, grid_x = np.mgrid[:n, :n] - 0.5 * (n - 1)
    d_y, d_x = np.gradient(data)
    return -(2.0 * data + grid_x * d_x + grid_y * d_y)


def _psf_values(epsf, stamps, stretch):
    """The ePSF (stretched by ``stretch`` per source, when given) sampled on
    the stamps, each stamp normalised to the ePSF's flux within it: the
    native samples of an ePSF sum to that only on average over sub-pixel
    phases (within about 1 % either way at two-fold oversampling), which
    would make a star's PSF flux depend on where it falls in its pixel."""
    oversampling = oversampling_of(epsf)
    values = _sample(ndimage.spline_filter(epsf.data.astype(np.float64), order=3), stamps.dx, stamps.dy, oversampling)
    if stretch is not None:
        derivative = ndimage.spline_filter(stretch_derivative(epsf), order=3)
        values = values + np.asarray(stretch)[:, None] * _sample(derivative, stamps.dx, stamps.dy, oversampling)
    return values * (_disc_fraction(epsf, stamps.distance.max()) / values.sum(axis=1, keepdims=True))


def _disc_fraction(epsf, radius):
    """The fraction of the ePSF's flux within ``radius`` (native px) of its centre."""
    n = epsf.data.shape[0]
    grid_y, grid_x = (np.mgrid[:n, :n] - 0.5 * (n - 1)) / oversampling_of(epsf)
    return float(epsf.data[np.hypot(grid_x, grid_y) <= radius].sum() / epsf.data.sum())


def measure_stretch(image, rms, epsf, x, y, fit_radius, bad):
    """Each star's stretch over the ePSF, and its error: flux F and F * e
    fitted together (model F (P + e D), ``stretch_derivative``) on the
    pixels within ``fit_radius``, one small least-squares problem per star,
    solved all at once.  For isolated stars."""
    stamps = _stamps(x, y, fit_radius, image.shape)
    use = stamps.inside & ~bad[stamps.py, stamps.px]
    p = np.where(use, _psf_values(epsf, stamps, None), 0.0)
    d = np.where(use, _sample(ndimage.spline_filter(stretch_derivative(epsf), order=3), stamps.dx, stamps.dy,
                              oversampling_of(epsf)), 0.0)
    weight = 1.0 / rms[stamps.py, stamps.px].astype(np.float64) ** 2
    data = image[stamps.py, stamps.px]
    a11, a12, a22 = (weight * p * p).sum(1), (weight * p * d).sum(1), (weight * d * d).sum(1)
    b1, b2 = (weight * p * data).sum(1), (weight * d * data).sum(1)
    det = a11 * a22 - a12 ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        flux, flux_stretch = (a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det
        stretch = flux_stretch / flux
        stretch_err = np.sqrt(a11 / det) / np.abs(flux)
    return stretch, stretch_err


#: a PSF fit needs this fraction of the PSF's light within its disc on usable pixels
MIN_COVERAGE = 0.7


def isolated_fluxes(image, rms, epsf, x, y, fit_radius, bad, stretch=None):
    """PSF fluxes at positions far enough apart that their fits do not
    overlap (empty sky, for a detection limit): per position sum(w P d) /
    sum(w P^2) over the usable pixels within ``fit_radius``, P sampled as
    ``fit_fluxes`` samples it (the same flux scale); NaN under
    ``MIN_COVERAGE``.  No simultaneous fit, no model image."""
    stamps = _stamps(x, y, max(fit_radius, epsf_extent(epsf)), image.shape)
    values = _psf_values(epsf, stamps, stretch)
    disc = stamps.inside & (stamps.distance <= fit_radius)[None, :]
    p = np.where(disc & ~bad[stamps.py, stamps.px], values, 0.0)
    weight = 1.0 / rms[stamps.py, stamps.px].astype(np.float64) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        flux = (weight * p * image[stamps.py, stamps.px]).sum(1) / (weight * p * p).sum(1)
        coverage = p.sum(1) / np.where(disc, values, 0.0).sum(1)
    return np.where(coverage > MIN_COVERAGE, flux, np.nan)


def fit_fluxes(data_sub, rms, gain, epsf, x, y, fit_radius, bad, stretch=None):
    """Simultaneous weighted linear fit of all source fluxes at fixed
    positions; returns a ``PSFFit``.

    The fit uses the pixels within ``fit_radius`` of any source (not
    ``bad``); on them, every source's model reaches as far as the ePSF
    does, so a neighbour's wings inside a source's disc are fitted as the
    neighbour's light rather than added to the source.  ``stretch`` (per
    source) widens or narrows each source's ePSF (``stretch_derivative``)
    for a PSF that changes across the field.  The fluxes are in the ePSF's
    normalisation; an aperture correction (measured by the caller) ties
    them to the apertures.
    """
    h, w = data_sub.shape
    stamps = _stamps(x, y, max(fit_radius, epsf_extent(epsf)), (h, w))
    py, px, inside, distance = stamps.py, stamps.px, stamps.inside, stamps.distance
    values = _psf_values(epsf, stamps, stretch)                      # native samples sum to 1
    flat = py * w + px
    # each source's own disc: the fit's pixels, its coverage, weights and error
    own = inside & (distance <= fit_radius)[None, :]
    usable = own & ~bad[py, px]
    model = np.where(usable, values, 0.0)
    sigma = rms[py, px].astype(np.float64)
    in_fit = np.zeros(h * w, dtype=bool)
    in_fit[flat[usable]] = True

    # the design matrix: every source's ePSF over the fit pixels it reaches
    use = inside & in_fit[flat]
    col = np.broadcast_to(np.arange(x.size)[:, None], px.shape)[use]
    pixels, row = np.unique(flat[use], return_inverse=True)
    weight = 1.0 / rms.ravel()[pixels].astype(np.float64)
    design = coo_matrix((values[use] * weight[row], (row, col)), shape=(pixels.size, x.size)).tocsr()
    target = data_sub.ravel()[pixels] * weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flux = lsqr(design, target, atol=1e-10, btol=1e-10, iter_lim=2000)[0]

    # a constant offset s adds s * sum(w P) / sum(w P^2) to a linear fit's flux
    pw = (model / sigma ** 2).sum(axis=1)
    p2w = (model ** 2 / sigma ** 2).sum(axis=1)
    # per-source variance (neighbours' covariance neglected): sky, read noise
    # and the source's own photons, for the least-squares estimator at fixed weights
    var_pix = sigma ** 2 + np.clip(flux[:, None] * model, 0, None) / gain
    var = (model ** 2 / sigma ** 4 * var_pix).sum(axis=1) / np.maximum(p2w, 1e-30) ** 2
    full = (values * (distance <= fit_radius)[None, :]).sum(axis=1)
    coverage = model.sum(axis=1) / np.maximum(full, 1e-30)
    ok = (p2w > 0) & np.isfinite(flux) & (coverage > MIN_COVERAGE)
    image = _render(values, flat, inside, np.where(ok, flux, 0.0), (h, w))
    chi = _reduced_chi(data_sub, image, py, px, usable, var_pix)
    return PSFFit(flux=flux, flux_err=np.sqrt(var) * np.maximum(chi, 1.0), ok=ok,
                  sky_weight=pw / np.maximum(p2w, 1e-30), model=image, stamps=stamps, values=values, chi=chi)


def _reduced_chi(data_sub, model, py, px, usable, var_pix):
    """Each source's sqrt(reduced chi^2) over its fit pixels: above one where
    the model misses the star's profile (a PSF-model error, which dominates
    bright stars' errors) or a neighbour it does not know."""
    residual = np.where(usable, data_sub[py, px] - model[py, px], 0.0)
    n = usable.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((residual ** 2 / var_pix).sum(axis=1) / np.maximum(n - 1, 1))


def _render(values, flat, inside, flux, shape):
    """Image of the sources' ePSF samples (n_sources, n_pixels) at flat pixel
    indices, scaled by their fluxes."""
    return np.bincount(flat[inside], weights=(values * flux[:, None])[inside],
                       minlength=shape[0] * shape[1]).reshape(shape)


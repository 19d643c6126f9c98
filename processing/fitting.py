"""Weighted linear fits with an intrinsic scatter and outlier rejection.

The aperture-correction maps and the photometric zero point are both
``robust_fit`` of a smooth model to stars that scatter more than their
photometric errors say (PSF changes on small scales, colour terms of other
bands, flat-field errors) and that include outliers (blends, variables).
The intrinsic scatter is estimated from the median absolute deviation of
the normalised residuals of the more precise points, so outliers not yet
rejected do not inflate it and faint points do not hide it.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class LinearFit:
    coeffs: np.ndarray
    covariance: np.ndarray     # of the coefficients, the intrinsic scatter included
    intrinsic: float           # scatter beyond the errors (same units as the values)
    keep: np.ndarray           # the points the final fit used

    def predict(self, design):
        return design @ self.coeffs

    def error(self, design):
        """1-sigma error of the model at each design row."""
        return np.sqrt(np.einsum("ij,jk,ik->i", design, self.covariance, design))


def surface_terms(x, y, shape, order):
    """Design matrix of a 2-D polynomial of ``order`` in coordinates scaled
    to [-1, 1] over a frame of ``shape`` (numpy order)."""
    h, w = shape
    u, v = 2.0 * np.asarray(x, float) / max(w - 1, 1) - 1.0, 2.0 * np.asarray(y, float) / max(h - 1, 1) - 1.0
    return np.column_stack([u ** i * v ** j for i in range(order + 1) for j in range(order + 1 - i)])


@dataclass
class Surface:
    """A smooth function over the frame: a ``robust_fit`` of a 2-D polynomial."""
    fit: LinearFit
    shape: tuple
    order: int

    def __call__(self, x, y):
        return self.fit.predict(surface_terms(x, y, self.shape, self.order))

    def error(self, x, y):
        return self.fit.error(surface_terms(x, y, self.shape, self.order))

    @property
    def n_points(self):
        return int(self.fit.keep.sum())


def fit_surface(x, y, values, errors, use, shape, max_order=2, clip=3.0):
    """``Surface`` through ``values`` at (x, y), of the highest order up to
    ``max_order`` the usable points support, outliers beyond ``clip`` sigma
    rejected (``robust_fit``)."""
    ok = use & np.isfinite(values) & np.isfinite(errors) & (errors > 0)
    order = surface_order(max_order, int(ok.sum()))
    return Surface(robust_fit(surface_terms(x, y, shape, order), values, errors, ok, clip=clip, n_iter=5), shape, order)


def surface_order(max_order, n_points, per_coefficient=10):
    """The highest polynomial order up to ``max_order`` with ``per_coefficient`` points per coefficient."""
    order = max_order
    while order > 0 and n_points < per_coefficient * (order + 1) * (order + 2) // 2:
        order -= 1
    return order


def robust_intrinsic(residuals, errors, clip=3.0):
    """Scatter s beyond ``errors`` (zero when there is none).

    A robust start: the s that gives the residuals of the more precise half
    of the points (at least 10), divided by sqrt(error^2 + s^2), a robust
    (1.4826 MAD) standard deviation of one.  Then the maximum-likelihood s
    of the points within ``clip`` of that, where the precise points weigh
    most: an error floor (a PSF model's, a flat field's) shows in them
    only, and outliers not yet rejected do not count."""
    z = np.abs(residuals - np.median(residuals))
    e2 = errors ** 2
    if len(z) < 3:
        return 0.0
    start = _spread_matching(z, e2)
    near = z < clip * np.sqrt(e2 + start ** 2)
    z2, e2 = z[near] ** 2, e2[near]

    def likelihood_slope(s):              # d(log L)/d(s^2), up to a factor
        total = e2 + s * s
        return np.sum((z2 - total) / total ** 2)

    if likelihood_slope(0.0) <= 0:
        return 0.0
    return _bisect(lambda s: likelihood_slope(s) > 0, 0.0, float(np.sqrt(z2.max())))


def _spread_matching(z, e2):
    """The s for which the more precise half's z / sqrt(e2 + s^2) has a robust std of one."""
    best = np.argsort(e2)[:max(10, len(z) // 2)]
    z, e2 = z[best], e2[best]

    def too_wide(s):
        return 1.4826 * np.median(z / np.sqrt(e2 + s * s)) > 1.0

    return _bisect(too_wide, 0.0, 1.4826 * float(np.median(z))) if too_wide(0.0) else 0.0


def _bisect(below, low, high, n=40):
    """The boundary in [low, high] where ``below(s)`` turns false (it is true at low)."""
    for _ in range(n):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if below(middle) else (low, middle)
    return float(high)


def robust_fit(design, values, errors, usable, clip, max_intrinsic=np.inf, n_iter=10):
    """Weighted least squares of ``values`` on ``design``, the weights
    1 / (error^2 + intrinsic^2), points beyond ``clip`` times that total
    error rejected, until the kept set stops changing.  Returns a ``LinearFit``."""
    n_params = design.shape[1]
    usable = usable & np.isfinite(values) & np.isfinite(errors) & (errors > 0)
    # start from the points near the median: a weighted mean can fall
    # between two groups (stars and a galaxy's knots) and keep the wrong one
    offset = values - np.median(values[usable]) if usable.any() else values
    start = min(max_intrinsic, robust_intrinsic(offset[usable], errors[usable])) if usable.sum() >= 3 else np.inf
    keep, intrinsic = usable & (np.abs(offset) < clip * np.hypot(errors, start)), 0.0
    coeffs = np.zeros(n_params)
    for _ in range(n_iter):
        if keep.sum() < n_params + 2:
            break
        sigma = np.hypot(errors[keep], intrinsic)
        coeffs = np.linalg.lstsq(design[keep] / sigma[:, None], values[keep] / sigma, rcond=None)[0]
        residuals = values - design @ coeffs
        intrinsic = min(max_intrinsic, robust_intrinsic(residuals[keep], errors[keep]))
        # the clipping scale from every usable point too (robust_intrinsic
        # ignores outliers): from the kept ones alone, a tight subset could
        # clip the others and then keep itself
        scale = max(intrinsic, min(max_intrinsic, robust_intrinsic(residuals[usable], errors[usable])))
        new_keep = usable & (np.abs(residuals) < clip * np.hypot(errors, scale))
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    if keep.sum() >= n_params:
        sigma = np.hypot(errors[keep], intrinsic)
        covariance = np.linalg.pinv((design[keep] / sigma[:, None] ** 2).T @ design[keep])
    else:
        covariance = np.full((n_params, n_params), np.nan)
    return LinearFit(coeffs, covariance, intrinsic, keep)

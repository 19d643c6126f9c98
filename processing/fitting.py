"""Weighted linear fits with an intrinsic scatter and outlier rejection.

The aperture-correction maps and the photometric zero point are both
``robust_fit`` of a smooth model to stars that scatter more than their
photometric errors say (PSF changes on small scales, colour terms of other
bands, flat-field errors) and that include outliers (blends, variables).
The intrinsic scatter is estimated from the median absolute deviation of
the residuals, so outliers not yet rejected do not inflate it.
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


def surface_order(max_order, n_points, per_coefficient=10):
    """The highest polynomial order up to ``max_order`` with ``per_coefficient`` points per coefficient."""
    order = max_order
    while order > 0 and n_points < per_coefficient * (order + 1) * (order + 2) // 2:
        order -= 1
    return order


def robust_intrinsic(residuals, errors):
    """Scatter beyond ``errors``: the residuals' robust standard deviation
    (1.4826 MAD) with the typical error removed in quadrature."""
    spread = 1.4826 * np.median(np.abs(residuals - np.median(residuals)))
    return float(np.sqrt(max(0.0, spread ** 2 - np.median(errors ** 2))))


def robust_fit(design, values, errors, usable, clip, max_intrinsic=np.inf, n_iter=10):
    """Weighted least squares of ``values`` on ``design``, the weights
    1 / (error^2 + intrinsic^2), points beyond ``clip`` times that total
    error rejected, until the kept set stops changing.  Returns a ``LinearFit``."""
    n_params = design.shape[1]
    usable = usable & np.isfinite(values) & np.isfinite(errors) & (errors > 0)
    keep, intrinsic = usable.copy(), 0.0
    coeffs = np.zeros(n_params)
    for _ in range(n_iter):
        if keep.sum() < n_params + 2:
            break
        sigma = np.hypot(errors[keep], intrinsic)
        coeffs = np.linalg.lstsq(design[keep] / sigma[:, None], values[keep] / sigma, rcond=None)[0]
        residuals = values - design @ coeffs
        intrinsic = min(max_intrinsic, robust_intrinsic(residuals[keep], errors[keep]))
        new_keep = usable & (np.abs(residuals) < clip * np.hypot(errors, intrinsic))
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    if keep.sum() >= n_params:
        sigma = np.hypot(errors[keep], intrinsic)
        covariance = np.linalg.pinv((design[keep] / sigma[:, None] ** 2).T @ design[keep])
    else:
        covariance = np.full((n_params, n_params), np.nan)
    return LinearFit(coeffs, covariance, intrinsic, keep)

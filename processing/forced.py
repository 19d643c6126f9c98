"""Forced photometry at fixed sky positions (alert targets) on reduced frames.

A reduction leaves what measuring any position later needs in
``photmodel.fits`` beside ``calibrated.fits``: the frame's ePSF and, on a
grid over the frame, its calibration maps (zero point at the calibrators'
median BP-RP and its error, aperture-to-total and PSF-to-total corrections
and their errors, the PSF's stretch).  ``measure`` reads the calibrated
image only in sections around the positions, so a target is measured on an
archived frame as it would have been during the reduction.

At each position (never re-centred):

- sky and local noise: the 3-sigma clipped median and standard deviation
  of the pixels in the pipeline's sky annulus;
- PSF flux: sum(P d) / sum(P^2) over the pixels within the PSF fit radius,
  P the frame's ePSF stretched as the frame's PSF is there and sampled as
  the pipeline's fit samples it (``psf._psf_values``, the same flux scale);
- the flux in the calibration aperture, pixels weighted by the fraction of
  25 sub-pixels inside the circle;
- both corrected to total flux and calibrated with the frame's maps; the
  one with the smaller error is reported (``calibrate``).  A
  target's colour is unknown: it is calibrated at the calibrators' median
  BP-RP, and its calibration error includes the colour term times the
  calibrators' BP-RP spread.

Errors come from the local noise, the source's own photons (gain) and the
sky level's error; the upper limit is ``LIMIT_SIGMA`` times the error of a
source-free measurement there.  Fluxes are calibrated on a zero point of
``FLUX_ZERO_POINT``: mag = 25 - 2.5 log10(flux); they stay negative when
the sky there is fainter than its median (what stacking needs).

numpy, scipy and astropy only: the archive's ingestion, on Debian's Python
without the pipeline's packages, loads this file (``inputs/rapas/res/forced.py``
is a link to it) and ``psf.py`` beside it.
"""
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS
from scipy.interpolate import RectBivariateSpline

MODEL_NAME = "photmodel.fits"
#: calibrated fluxes are on this zero point: mag = 25 - 2.5 log10(flux)
FLUX_ZERO_POINT = 25.0
#: a measurement at this S/N or more gets a magnitude; below, an upper limit
DETECTION_SNR = 3.0
#: upper limits are this many sigma of a source-free measurement
LIMIT_SIGMA = 5.0
#: the calibration maps are sampled on GRID_NODES x GRID_NODES points
#: (cubic interpolation is exact for the pipeline's maps, at most quadratic)
GRID_NODES = 9
MAP_NAMES = ("zero_point", "zero_point_err", "aperture_to_total", "aperture_to_total_err",
             "psf_to_total", "psf_to_total_err", "stretch")
#: pixels per side of the sub-pixel grid of the aperture's edge
SUBPIXELS = 5
MAG_PER_FLUX_ERR = 2.5 / np.log(10)


def _psf_module():
    """The pipeline's ``psf`` module, also when this file is loaded alone."""
    try:
        from . import psf
        return psf
    except ImportError:
        path = Path(__file__).resolve().with_name("psf.py")
        spec = importlib.util.spec_from_file_location("rapas_psf", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


psf = _psf_module()


# ---- the model file ---------------------------------------------------------
def write_model(path, shape, epsf, maps, keywords):
    """Write ``photmodel.fits``: the ePSF (primary HDU; empty without one)
    and the maps (name -> f(x, y) on 0-based pixels, or None) sampled on the
    grid (image extension CALMAPS, one plane per ``MAP_NAMES``).
    ``keywords``: FWHM, FITRAD, APRAD, ANNIN, ANNOUT (px), EXPTIME (s),
    GAIN (e-/ADU), CALCOLOR (the BP-RP targets are calibrated at)."""
    ny, nx = shape
    gx, gy = np.linspace(0.0, nx - 1.0, GRID_NODES), np.linspace(0.0, ny - 1.0, GRID_NODES)
    grid_x, grid_y = np.meshgrid(gx, gy)
    planes = np.full((len(MAP_NAMES), GRID_NODES, GRID_NODES), np.nan)
    for k, name in enumerate(MAP_NAMES):
        if maps.get(name) is not None:
            planes[k] = np.asarray(maps[name](grid_x.ravel(), grid_y.ravel()), float).reshape(grid_x.shape)
    primary = fits.PrimaryHDU(None if epsf is None else np.asarray(epsf.data, np.float32))
    if epsf is not None:
        primary.header["OVERSAMP"] = (psf.oversampling_of(epsf), "ePSF samples per pixel")
    for key, value in keywords.items():          # an unmeasured value is left out
        if value is not None and np.isfinite(value):
            primary.header[key] = float(value)
    calmaps = fits.ImageHDU(planes.astype(np.float64), name="CALMAPS")
    for k, name in enumerate(MAP_NAMES, start=1):
        calmaps.header[f"MAP{k}"] = name
    calmaps.header["GRIDNX"], calmaps.header["GRIDNY"] = nx, ny
    fits.HDUList([primary, calmaps]).writeto(path, overwrite=True)


@dataclass
class _EPSF:
    """The two attributes of a photutils ePSF the PSF helpers read."""
    data: np.ndarray
    oversampling: int


@dataclass
class FrameModel:
    """A frame's photometric model as ``photmodel.fits`` holds it."""
    epsf: _EPSF | None
    fwhm: float
    fit_radius: float
    aperture_radius: float
    annulus: tuple
    exptime: float
    gain: float
    calibration_colour: float
    maps: dict                      # name -> spline, or None where the map is undefined

    def at(self, name, x, y):
        spline = self.maps[name]
        return np.full(np.shape(x), np.nan) if spline is None else spline.ev(y, x)

    @property
    def half_size(self):
        """Half the side (px) of the section read around a position."""
        reach = [self.annulus[1], self.fit_radius]
        if self.epsf is not None:
            reach.append(psf.epsf_extent(self.epsf))
        return int(np.ceil(max(reach))) + 2


def read_model(path):
    """The ``FrameModel`` in a ``photmodel.fits``."""
    with fits.open(path) as hdul:
        head = hdul[0].header
        epsf = None if hdul[0].data is None else _EPSF(hdul[0].data.astype(np.float64), int(head["OVERSAMP"]))
        planes, maps_head = hdul["CALMAPS"].data.astype(np.float64), hdul["CALMAPS"].header
    gx = np.linspace(0.0, maps_head["GRIDNX"] - 1.0, planes.shape[2])
    gy = np.linspace(0.0, maps_head["GRIDNY"] - 1.0, planes.shape[1])
    maps = {}
    for k, plane in enumerate(planes, start=1):
        usable = np.isfinite(plane).all()
        maps[maps_head[f"MAP{k}"]] = RectBivariateSpline(gy, gx, plane, kx=3, ky=3) if usable else None
    return FrameModel(epsf=epsf, fwhm=head["FWHM"], fit_radius=head["FITRAD"], aperture_radius=head["APRAD"],
                      annulus=(head["ANNIN"], head["ANNOUT"]), exptime=head["EXPTIME"], gain=head["GAIN"],
                      calibration_colour=head.get("CALCOLOR", np.nan), maps=maps)


# ---- measuring --------------------------------------------------------------
@dataclass
class Local:
    """Raw measurements at one position (ADU; errors of one sigma)."""
    sky: float
    noise: float                 # per-pixel standard deviation of the sky
    psf_flux: float
    psf_err: float
    psf_err_empty: float         # the error without the source's photons
    ap_flux: float
    ap_err: float
    ap_err_empty: float


def measure(product_dir, ra, dec, detection_snr=DETECTION_SNR):
    """Forced photometry at (ra, dec) (deg, arrays) on a reduced frame;
    returns a dict of arrays, one value per position: ``on_frame``, x, y
    (0-based px), the raw measurements (``Local``'s fields) and the
    calibrated ones (``calibrate``).  Positions off the frame are NaN."""
    product_dir = Path(product_dir)
    model = read_model(product_dir / MODEL_NAME)
    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    raw = {name: np.full(ra.size, np.nan) for name in Local.__dataclass_fields__}
    with fits.open(product_dir / "calibrated.fits", memmap=True) as hdul:
        hdu = hdul[0]
        shape = (hdu.header["NAXIS2"], hdu.header["NAXIS1"])
        x, y = WCS(hdu.header).all_world2pix(ra, dec, 0)
        on_frame = np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (x < shape[1] - 0.5) & \
            (y > -0.5) & (y < shape[0] - 0.5)
        for k in np.flatnonzero(on_frame):
            section, x0, y0 = _section(hdu.section, x[k], y[k], model.half_size, shape)
            local = measure_at(section, x[k] - x0, y[k] - y0, model, model.at("stretch", x[k], y[k]))
            for name in raw:
                raw[name][k] = getattr(local, name)
    return dict(on_frame=on_frame, x=x, y=y, **raw, **calibrate(raw, model, x, y, detection_snr))


def _section(section, x, y, half, shape):
    """The pixels within ``half`` of (x, y), as float64, and the section's origin."""
    cx, cy = int(round(x)), int(round(y))
    x0, y0 = max(cx - half, 0), max(cy - half, 0)
    x1, y1 = min(cx + half + 1, shape[1]), min(cy + half + 1, shape[0])
    return np.asarray(section[y0:y1, x0:x1], dtype=np.float64), x0, y0


def measure_at(image, x, y, model, stretch):
    """``Local`` measurements at (x, y) (0-based px in ``image``)."""
    grid_y, grid_x = np.mgrid[:image.shape[0], :image.shape[1]]
    distance = np.hypot(grid_x - x, grid_y - y)
    finite = np.isfinite(image)
    in_annulus = finite & (distance >= model.annulus[0]) & (distance <= model.annulus[1])
    if in_annulus.sum() < 10:
        return Local(*(np.nan,) * 8)
    _, sky, noise = sigma_clipped_stats(image[in_annulus], sigma=3.0, maxiters=5)
    n_sky = int(in_annulus.sum())
    data = image - sky
    psf_flux, psf_err, psf_err_empty = _psf_flux(data, finite, x, y, model, stretch, noise, n_sky)
    ap_flux, ap_err, ap_err_empty = _aperture_flux(data, x, y, model.aperture_radius, model.gain, noise, n_sky)
    return Local(sky, noise, psf_flux, psf_err, psf_err_empty, ap_flux, ap_err, ap_err_empty)


def _psf_flux(data, finite, x, y, model, stretch, noise, n_sky):
    """PSF flux at a fixed position, its error and its error without the source (ADU)."""
    if model.epsf is None:
        return np.nan, np.nan, np.nan
    stamps = psf._stamps(np.array([x]), np.array([y]), max(model.fit_radius, psf.epsf_extent(model.epsf)),
                         data.shape)
    values = psf._psf_values(model.epsf, stamps, None if not np.isfinite(stretch) else np.array([stretch]))[0]
    disc = stamps.inside[0] & (stamps.distance <= model.fit_radius)
    usable = disc & finite[stamps.py[0], stamps.px[0]]
    p = np.where(usable, values, 0.0)
    if p.sum() < psf.MIN_COVERAGE * np.where(disc, values, 0.0).sum():
        return np.nan, np.nan, np.nan
    d = np.where(usable, data[stamps.py[0], stamps.px[0]], 0.0)
    p2 = (p * p).sum()
    flux = (p * d).sum() / p2
    sky_term = (p.sum() / p2) ** 2 * noise ** 2 / n_sky
    empty = noise ** 2 / p2 + sky_term
    own = (p * p * np.clip(flux * p, 0, None)).sum() / model.gain / p2 ** 2
    return flux, np.sqrt(empty + own), np.sqrt(empty)


def _aperture_flux(data, x, y, radius, gain, noise, n_sky):
    """Flux in a circle of ``radius`` px at (x, y), its error and its error
    without the source (ADU); NaN when a pixel inside is masked or the
    circle leaves the image."""
    ny, nx = data.shape
    if x - radius < -0.5 or y - radius < -0.5 or x + radius > nx - 0.5 or y + radius > ny - 0.5:
        return np.nan, np.nan, np.nan
    sub = (np.arange(SUBPIXELS) + 0.5) / SUBPIXELS - 0.5
    x0, x1 = int(np.floor(x - radius - 0.5)), int(np.ceil(x + radius + 0.5))
    y0, y1 = int(np.floor(y - radius - 0.5)), int(np.ceil(y + radius + 0.5))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, nx - 1), min(y1, ny - 1)
    py, px = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    dx = px[..., None, None] + sub[None, None, None, :] - x
    dy = py[..., None, None] + sub[None, None, :, None] - y
    weight = (np.hypot(dx, dy) <= radius).mean(axis=(2, 3))
    pixels = data[y0:y1 + 1, x0:x1 + 1]
    if not np.isfinite(pixels[weight > 0]).all():
        return np.nan, np.nan, np.nan
    flux = float((weight * np.nan_to_num(pixels)).sum())
    empty = noise ** 2 * ((weight ** 2).sum() + weight.sum() ** 2 / n_sky)
    return flux, np.sqrt(empty + max(flux, 0.0) / gain), np.sqrt(empty)


def calibrate(raw, model, x, y, detection_snr=DETECTION_SNR):
    """Calibrated fluxes (zero point ``FLUX_ZERO_POINT``), magnitudes and
    upper limits from the raw measurements (dict of arrays).  Of the PSF
    and the aperture measurement, each corrected to total flux, the one
    with the smaller error (its correction's error included) is reported
    (``method``): the PSF fit for faint targets, the aperture for bright
    ones where the frame's PSF-to-aperture correction is uncertain.  A
    magnitude where S/N >= ``detection_snr``, NaN below; the
    ``LIMIT_SIGMA`` upper limit of the method everywhere."""
    zero = model.at("zero_point", x, y)
    psf = _corrected(raw["psf_flux"], raw["psf_err"], raw["psf_err_empty"], zero, model.exptime,
                     model.at("psf_to_total", x, y), model.at("psf_to_total_err", x, y))
    ap = _corrected(raw["ap_flux"], raw["ap_err"], raw["ap_err_empty"], zero, model.exptime,
                    model.at("aperture_to_total", x, y), model.at("aperture_to_total_err", x, y))
    use_psf = np.isfinite(psf[1]) & ~(ap[1] < psf[1])
    flux, flux_err, empty_err = (np.where(use_psf, p, a) for p, a in zip(psf, ap))
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / flux_err
        detected = snr >= detection_snr
        mag = np.where(detected, FLUX_ZERO_POINT - 2.5 * np.log10(np.where(detected, flux, 1.0)), np.nan)
        mag_err = np.where(detected, MAG_PER_FLUX_ERR / snr, np.nan)
        limit = FLUX_ZERO_POINT - 2.5 * np.log10(LIMIT_SIGMA * empty_err)
    return dict(method=np.where(use_psf, "PSF", np.where(np.isfinite(ap[0]), "aperture", "")),
                flux=flux, flux_err=flux_err, snr=snr, mag=mag, mag_err=mag_err,
                mag_calib_err=model.at("zero_point_err", x, y), mag_limit=limit,
                flux_ap=ap[0], flux_ap_err=ap[1],
                calibration_colour=np.full(np.shape(x), model.calibration_colour))


def _corrected(flux, err, err_empty, zero, exptime, correction, correction_err):
    """A measurement (ADU) corrected to total flux and calibrated (zero point
    ``FLUX_ZERO_POINT``): flux, its error with the correction's, and the
    error of a source-free measurement."""
    scale = 10 ** (-0.4 * (correction + zero - FLUX_ZERO_POINT)) / exptime
    total_err = np.hypot(err, np.abs(flux) * correction_err / MAG_PER_FLUX_ERR)
    return flux * scale, total_err * scale, err_empty * scale

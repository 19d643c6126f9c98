"""Background, masks and source detection (sep, i.e. SExtractor's algorithms).

Pixel coordinates are 0-based (numpy convention) throughout the pipeline;
FITS 1-based values are produced only when writing products.
"""
from dataclasses import dataclass

import numpy as np
import sep_x as sep
from scipy import ndimage

from .contract import FLAG_BLENDED
from .errors import NoStarsError


@dataclass
class Masks:
    bad: np.ndarray            # never used: NaN, border, cosmic rays
    saturated: np.ndarray      # at or above SATURATE, dilated by one pixel
    cosmic_rays: np.ndarray | None = None      # LA Cosmic's mask, when it ran


@dataclass
class Background:
    level: np.ndarray     # ADU per pixel
    rms: np.ndarray       # ADU per pixel
    global_rms: float


def build_masks(data, nan_mask, saturate, border_px, cosmic_rays=False, gain=1.0, rdnoise=0.0):
    """``Masks``: pixels never used, and saturated pixels (dilated by one
    pixel, since bleeding reaches the neighbours)."""
    saturated = ndimage.binary_dilation(data >= saturate, iterations=1) & ~nan_mask
    bad = nan_mask.copy()
    if border_px > 0:
        bad[:border_px, :] = bad[-border_px:, :] = True
        bad[:, :border_px] = bad[:, -border_px:] = True
    crmask = None
    if cosmic_rays:
        import astroscrappy
        crmask, _ = astroscrappy.detect_cosmics(data, inmask=bad | saturated, gain=gain,
                                                readnoise=rdnoise, satlevel=saturate)
        bad |= crmask
    return Masks(bad=bad, saturated=saturated, cosmic_rays=crmask)


def _size_sep_buffers(image):
    """sep's object-pixel stack must hold a crowded frame (a quarter of it)."""
    sep.set_extract_pixstack(max(300000, image.size // 4))
    sep.set_sub_object_limit(4096)


def _binned2(image):
    """2x2 block mean (odd last row/column dropped)."""
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    return image[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


MAX_MASKED_FRACTION = 0.5   # a source mask larger than this is not trusted


def estimate_background(data, mask, box=64):
    """Two passes: sources found on a first background are masked (ellipses
    enlarged 3x) before the final background and RMS maps.  The first pass
    (background and detection) runs on a 2x2-binned image: it only has to
    find where the sources are, at a quarter of the cost."""
    _size_sep_buffers(data)
    binned = np.ascontiguousarray(_binned2(data), dtype=np.float32)
    binned_mask = _binned2(mask.astype(np.float32)) > 0
    first = sep.Background(binned, mask=binned_mask, bw=box // 2, bh=box // 2, fw=3, fh=3)
    objs = sep.extract(binned - first, 5.0, err=first.globalrms, mask=binned_mask, minarea=3,
                       deblend_cont=1.0)
    src_mask = np.zeros(data.shape, dtype=bool)
    sep.mask_ellipse(src_mask, 2 * objs["x"] + 0.5, 2 * objs["y"] + 0.5, 2 * objs["a"], 2 * objs["b"],
                     objs["theta"], r=3.0 * 3)
    if src_mask.mean() > MAX_MASKED_FRACTION:
        # Binning hid noise the full frame has (a raw colour mosaic, fixed
        # pattern): "sources" everywhere.  Rely on sep's clipping per box.
        src_mask[:] = False
    final = sep.Background(data, mask=mask | src_mask, bw=box, bh=box, fw=3, fh=3)
    return Background(level=final.back(), rms=final.rms(), global_rms=float(final.globalrms))


MIN_STARS = 5          # sources with S/N > 5 needed to call the frame usable


@dataclass
class Detections:
    """sep's catalogue and what the later stages read from it."""
    objs: np.ndarray           # sep's structured array (x, y, a, b, theta, flux, peak, npix, flag)
    point_like: np.ndarray     # bool, see ``stellar``
    peak: np.ndarray           # peak pixel value above zero (ADU), for saturation tests
    flags: np.ndarray          # source flags set at detection (FLAG_BLENDED)

    def __len__(self):
        return len(self.objs)


def detect(data_sub, background, masks, sigma, gain):
    """``Detections`` on the background-subtracted image (see ``detect_sources``)."""
    objs = detect_sources(data_sub, background, masks.bad, sigma, gain)
    h, w = data_sub.shape
    iy = np.clip(np.round(objs["y"]).astype(int), 0, h - 1)
    ix = np.clip(np.round(objs["x"]).astype(int), 0, w - 1)
    return Detections(objs=objs, point_like=stellar(objs), peak=objs["peak"] + background.level[iy, ix],
                      flags=np.where(objs["flag"] & 1, FLAG_BLENDED, 0).astype(np.int32))   # sep OBJ_MERGED


def flux_error(objs, background, gain):
    """Error (ADU) of sep's isophotal fluxes: source photons and the
    background noise over the object's pixels."""
    return np.sqrt(np.abs(objs["flux"]) / gain + objs["npix"] * background.global_rms ** 2)


def detect_sources(data_sub, background, mask, sigma, gain, minarea=5):
    """sep extraction with deblending; raises ``NoStarsError`` unless at
    least ``MIN_STARS`` sources that are not sharper than a star (hot pixels,
    cosmic rays) reach S/N 5: the noise of a blank 2048x2048 frame gives
    one at most, a frame with stars dozens."""
    _size_sep_buffers(data_sub)
    objs = sep.extract(data_sub, sigma, err=background.rms, mask=mask, minarea=minarea,
                       deblend_nthresh=32, deblend_cont=0.005, clean=True)
    good = (objs["flux"] > 0) & (objs["a"] > 0.3)
    objs = objs[good]
    snr = objs["flux"] / flux_error(objs, background, gain)
    n_stars = int(np.sum((snr > 5) & ~sharp(objs)))
    if n_stars < MIN_STARS:
        raise NoStarsError(f"no stars: {n_stars} sources with S/N > 5 that are not sharper than a star"
                           f" ({len(objs)} above {sigma:g} sigma); the frame looks blank (closed shutter,"
                           " clouds or a wrong exposure)")
    return objs


def windowed_positions(data_sub, x, y, fwhm, mask):
    """SExtractor-style windowed centroids; falls back to the input where sep fails."""
    sig = np.full(x.size, fwhm / 2.3548)
    xw, yw, flag = sep.winpos(data_sub, x, y, sig, mask=mask)
    bad = (flag != 0) | ~np.isfinite(xw) | ~np.isfinite(yw) | (np.hypot(xw - x, yw - y) > fwhm)
    return np.where(bad, x, xw), np.where(bad, y, yw)


#: peak pixel / flux above which a source is sharper than any PSF (a
#: Gaussian of 1.2 px FWHM puts 0.47 of its light in one pixel): a cosmic
#: ray or a hot pixel
SHARP_PEAK_FRACTION = 0.5
#: this fraction of sharp detections (and at least MIN_STARS) says the frame
#: has cosmic rays to remove before anything else
COSMIC_RAY_FRACTION = 0.2


def sharp(objs):
    """Sources sharper than any PSF (``SHARP_PEAK_FRACTION``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return objs["peak"] / objs["flux"] > SHARP_PEAK_FRACTION


def needs_cosmic_ray_removal(objs):
    """True when the sharp detections are many: a raw, unstacked exposure."""
    n_sharp = int(sharp(objs).sum())
    return n_sharp >= MIN_STARS and n_sharp > COSMIC_RAY_FRACTION * len(objs)


def stellar(objs):
    """Point-like sources: second-moment size within 0.7-1.5 of the median of
    the bright round sources, b/a > 0.6, and not sharper than a PSF (rejects
    hot pixels, cosmic rays, galaxies and blends)."""
    size = np.sqrt(0.5 * (objs["a"] ** 2 + objs["b"] ** 2))
    round_ = (objs["b"] / objs["a"] > 0.6) & (objs["flag"] == 0) & (objs["npix"] >= 5) & ~sharp(objs)
    bright = np.argsort(-objs["flux"])
    bright = bright[round_[bright]][:300]
    if bright.size < 5:
        return round_
    ref = np.median(size[bright])
    return round_ & (size > 0.7 * ref) & (size < 1.5 * ref)


def initial_fwhm(objs, point_like, seeing_px=None):
    """Rough FWHM (px) from second moments of bright point-like sources,
    used only to size windows before the PSF is measured.  With fewer than
    five point-like sources the observer's seeing guess (``seeing_px``) is
    used when known, else the point-like sources there are, else the
    moments of all sources."""
    sigma = np.sqrt(0.5 * (objs["a"] ** 2 + objs["b"] ** 2))
    if point_like.sum() >= 5:
        idx = np.flatnonzero(point_like)
    elif seeing_px:
        return float(seeing_px)
    elif point_like.any():
        idx = np.flatnonzero(point_like)
    else:
        idx = np.arange(len(objs))
    bright = idx[np.argsort(-objs["flux"][idx])][:200]
    return float(2.3548 * np.median(sigma[bright]))


def isolated(x, y, radius):
    """True for sources with no neighbour closer than ``radius`` pixels."""
    from scipy.spatial import cKDTree
    tree = cKDTree(np.column_stack([x, y]))
    dist, _ = tree.query(np.column_stack([x, y]), k=2)
    return dist[:, 1] > radius


def footprints(shape, objs, scale=7.5):
    """Pixels within ``scale`` times each source's sep ellipse (a, b, theta):
    where a local sky or an empty-sky aperture must not look."""
    mask = np.zeros(shape, dtype=bool)
    sep.mask_ellipse(mask, objs["x"], objs["y"], objs["a"], objs["b"], objs["theta"], r=scale)
    return mask


def flux_radius(data_sub, x, y, r_max, mask):
    """Half-light radius (px) of each source within ``r_max`` (SExtractor's FLUX_RADIUS)."""
    radius, _ = sep.flux_radius(data_sub, x, y, np.full(len(x), r_max), 0.5, mask=mask, subpix=5)
    return radius

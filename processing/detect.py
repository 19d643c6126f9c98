"""Background, masks and source detection (sep, i.e. SExtractor's algorithms).

Pixel coordinates are 0-based (numpy convention) throughout the pipeline;
FITS 1-based values are produced only when writing products.
"""
from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std
import sep_x as sep
from scipy import ndimage

from .contract import FLAG_BLENDED, FLAG_TRAIL
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
    #: FWHM (px) of the point sources the first pass found, None with fewer
    #: than five: it sizes the detection filter before the PSF is measured
    point_source_fwhm: float | None = None


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
    """2x2 block mean as float32 (odd last row/column dropped)."""
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    a = image[:h, :w].astype(np.float32, copy=False)
    return np.float32(0.25) * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def _binned2_any(mask):
    """2x2 blocks with any pixel set (odd last row/column dropped)."""
    h, w = (mask.shape[0] // 2) * 2, (mask.shape[1] // 2) * 2
    m = mask[:h, :w]
    return m[0::2, 0::2] | m[1::2, 0::2] | m[0::2, 1::2] | m[1::2, 1::2]


MAX_MASKED_FRACTION = 0.5   # a source mask larger than this is not trusted
#: FWHM^2 (px^2) that 2x2 binning adds: a 2-px box less the 1-px one, in
#: variance (4/12 - 1/12 px^2), times 2.3548^2
BINNING_FWHM2 = 2.3548 ** 2 * 0.25


def estimate_background(data, mask, box=64):
    """Two passes: sources found on a first background are masked (ellipses
    enlarged 3x) before the final background and RMS maps.  The first pass
    (background and detection) runs on a 2x2-binned image: it only has to
    find where the sources are, at a quarter of the cost.  Its point
    sources' FWHM is kept (``Background.point_source_fwhm``)."""
    _size_sep_buffers(data)
    binned = _binned2(data)
    binned_mask = _binned2_any(mask)
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
    return Background(level=final.back(), rms=final.rms(), global_rms=float(final.globalrms),
                      point_source_fwhm=_unbinned_fwhm(objs))


def _unbinned_fwhm(binned_objs):
    """The median FWHM (px of the full frame) of the binned pass's point
    sources (sep's Gaussian-core FWHM), or None with fewer than five."""
    point_like = stellar(binned_objs, single_pixel(binned_objs))
    if point_like.sum() < 5:
        return None
    bright = np.flatnonzero(point_like)[np.argsort(-binned_objs["flux"][point_like])][:200]
    fwhm = 2.0 * binned_objs["fwhm"][bright]
    if mad_std(fwhm) > MAX_FWHM_SPREAD * np.median(fwhm):
        return None
    fwhm2 = np.median(fwhm) ** 2 - BINNING_FWHM2
    return float(np.sqrt(fwhm2)) if fwhm2 > 0 else None


#: the binned pass's point sources must agree on their FWHM within this
#: robust fraction: an undersampled PSF (a DSLR's 10-20 arcsec pixels),
#: binned again, gives sizes that mean nothing
MAX_FWHM_SPREAD = 0.3


MIN_STARS = 5          # sources with S/N > BLANK_SNR needed to call the frame usable
#: a source this significant is no noise peak (a blank frame has none)
BLANK_SNR = 7.0
#: pixels a detection needs above the threshold in the filtered image
MIN_AREA = 3
#: the detection filter is never narrower than this (px FWHM)
MIN_FILTER_FWHM = 1.5


@dataclass
class Detections:
    """sep's catalogue and what the later stages read from it."""
    objs: np.ndarray           # sep's structured array (x, y, a, b, theta, flux, peak, xpeak, ypeak, npix, flag)
    snr: np.ndarray            # detection S/N: the matched filter's peak
    sharp: np.ndarray          # bool: sharper than the PSF (``sharper_than_psf``)
    point_like: np.ndarray     # bool, see ``stellar``
    peak: np.ndarray           # peak pixel value above zero (ADU), for saturation tests
    flags: np.ndarray          # source flags set at detection (FLAG_BLENDED, FLAG_TRAIL)
    filter_fwhm: float         # the detection filter's FWHM (px)
    trails: list               # ``Trail``s found among the detections
    undersampled: bool = False  # sharp means single-pixel: a star may be one

    def __len__(self):
        return len(self.objs)

    def extended(self, more):
        """These detections followed by ``more`` (same filter; their trails)."""
        return Detections(objs=np.concatenate([self.objs, more.objs]), snr=np.concatenate([self.snr, more.snr]),
                          sharp=np.concatenate([self.sharp, more.sharp]),
                          point_like=np.concatenate([self.point_like, more.point_like]),
                          peak=np.concatenate([self.peak, more.peak]), flags=np.concatenate([self.flags, more.flags]),
                          filter_fwhm=self.filter_fwhm, trails=self.trails, undersampled=self.undersampled)


#: the PSF model's error per pixel, as a fraction of the model: peaks in a
#: residual image must stand above it as well as above the noise
MODEL_ERROR = 0.03


def residual_detections(residual, model, background, masks, sigma, fwhm, known_x, known_y):
    """Sources the first detection merged into brighter neighbours, found in
    the residual image (the frame less every fitted source): peaks whose
    matched-filter S/N reaches ``sigma`` with ``MODEL_ERROR`` of the
    (smoothed) model added to the noise, a FWHM or more from every known
    source.  Returns ``Detections``, all flagged blended, none point-like
    (they do not measure the PSF or the corrections)."""
    from scipy.spatial import cKDTree
    model_noise = MODEL_ERROR * ndimage.gaussian_filter(model.astype(np.float32), fwhm / 2.3548)
    noise = np.sqrt(background.rms.astype(np.float32) ** 2 + model_noise ** 2)
    objs, snr, _ = detect_sources(residual, Background(background.level, noise, background.global_rms),
                                  masks.bad, sigma, fwhm)
    if len(objs):
        distance, _ = cKDTree(np.column_stack([known_x, known_y])).query(np.column_stack([objs["x"], objs["y"]]))
        objs, snr = objs[distance >= fwhm], snr[distance >= fwhm]
    h, w = residual.shape
    iy = np.clip(np.round(objs["y"]).astype(int), 0, h - 1)
    ix = np.clip(np.round(objs["x"]).astype(int), 0, w - 1)
    none = np.zeros(len(objs), dtype=bool)
    return Detections(objs=objs, snr=snr, sharp=none, point_like=none,
                      peak=objs["peak"] + background.level[iy, ix] + model[iy, ix],
                      flags=np.full(len(objs), FLAG_BLENDED, dtype=np.int32), filter_fwhm=fwhm, trails=[])


def detect(data_sub, background, masks, sigma, gain, fwhm):
    """``Detections`` on the background-subtracted image (see
    ``detect_sources``), filtered for point sources of ``fwhm`` pixels;
    the sources sharper than such a PSF and those on trails are marked.

    Raises ``NoStarsError`` unless at least ``MIN_STARS`` sources that are
    not sharper than a star reach ``BLANK_SNR``: noise alone gives about one
    S/N-5 peak per million pixels and none at 7."""
    fwhm = max(fwhm, MIN_FILTER_FWHM)
    objs, snr, segments = detect_sources(data_sub, background, masks.bad, sigma, fwhm)
    sharpest = min(fwhm, sharpest_star_fwhm(objs, snr))
    undersampled = sharpest < MIN_FILTER_FWHM
    if undersampled:                    # a star's profile is a hot pixel's
        sharp = single_pixel(objs)
    else:
        sharp = sharper_than_psf(data_sub, objs["xpeak"], objs["ypeak"], background.rms, gain,
                                 moffat_contrast(sharpest))
    n_stars = int(np.sum((snr > BLANK_SNR) & ~sharp))
    if n_stars < MIN_STARS:
        raise NoStarsError(f"no stars: {n_stars} sources with S/N > {BLANK_SNR:g} that are not sharper than"
                           f" a star ({len(objs)} above S/N {sigma:g}); the frame looks blank (closed shutter,"
                           " clouds or a wrong exposure)")
    trails = find_trails(objs, segments, fwhm)
    on_trail = np.zeros(len(objs), dtype=bool)
    for trail in trails:
        on_trail |= trail.covers(objs["x"], objs["y"])
    h, w = data_sub.shape
    iy = np.clip(np.round(objs["y"]).astype(int), 0, h - 1)
    ix = np.clip(np.round(objs["x"]).astype(int), 0, w - 1)
    flags = np.where(objs["flag"] & 1, FLAG_BLENDED, 0) | np.where(on_trail, FLAG_TRAIL, 0)   # 1: sep OBJ_MERGED
    return Detections(objs=objs, snr=snr, sharp=sharp, point_like=stellar(objs, sharp | on_trail),
                      peak=objs["peak"] + background.level[iy, ix], flags=flags.astype(np.int32),
                      filter_fwhm=fwhm, trails=trails, undersampled=undersampled)


def flux_error(objs, background, gain):
    """Error (ADU) of sep's isophotal fluxes: source photons and the
    background noise over the object's pixels."""
    return np.sqrt(np.abs(objs["flux"]) / gain + objs["npix"] * background.global_rms ** 2)


def matched_snr(data_sub, rms, bad, fwhm):
    """The S/N image of a point source's PSF-weighted flux: the image
    convolved with a Gaussian of the PSF's FWHM, divided by the noise of
    that sum (the background RMS times the kernel's L2 norm; the RMS varies
    slowly).  A separable filter costs a fraction of sep's 2-D one."""
    sigma = fwhm / 2.3548
    radius = int(3.0 * sigma + 0.5)                 # scipy's kernel for truncate=3
    k1 = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k1 /= k1.sum()
    kernel_norm = float(np.sum(k1 ** 2))            # ||k1 (x) k1||_2 = ||k1||_2^2
    data = data_sub.astype(np.float32)            # a copy
    data[bad] = 0.0
    snr = ndimage.gaussian_filter(data, sigma, truncate=3.0, output=data)
    snr /= rms
    snr *= np.float32(1.0 / kernel_norm)
    return snr


def detect_sources(data_sub, background, mask, sigma, fwhm):
    """Sources whose PSF-matched S/N (``matched_snr``) reaches ``sigma``:
    the optimal test for point sources, so faint stars are found down to
    S/N ~ ``sigma`` of a PSF fit.  Deblending runs on the filtered image
    and keeps every peak (sep's cleaning, which merges faint neighbours
    into bright ones, is off).  The sources are then measured on the
    image itself over the same pixels.  Returns (sep objects, their S/N,
    the segmentation map)."""
    _size_sep_buffers(data_sub)
    snr_image = matched_snr(data_sub, background.rms, mask, fwhm)
    found, segments = sep.extract(snr_image, sigma, mask=mask, minarea=MIN_AREA, filter_kernel=None,
                                  deblend_nthresh=32, deblend_cont=0.0002, clean=False, segmentation_map=True)
    if len(found) == 0:                 # sep_x 1.5 crashes measuring an empty segmentation map
        return found, np.zeros(0), segments
    objs, _ = sep.extract(data_sub, sigma, err=background.rms, mask=mask, segmentation_map=segments,
                          filter_kernel=None)
    objs["flag"] |= found["flag"]                    # the deblending's flags
    good = (objs["flux"] > 0) & (objs["a"] > 0.3)
    # the map numbers source i as i + 1: renumber it for the sources kept
    relabel = np.zeros(len(objs) + 1, dtype=np.int32)
    relabel[1:][good] = np.arange(1, good.sum() + 1)
    return objs[good], np.asarray(found["peak"], dtype=float)[good], relabel[segments]


def windowed_positions(data_sub, x, y, fwhm, mask):
    """SExtractor-style windowed centroids; falls back to the input where sep fails."""
    sig = np.full(x.size, fwhm / 2.3548)
    xw, yw, flag = sep.winpos(data_sub, x, y, sig, mask=mask)
    bad = (flag != 0) | ~np.isfinite(xw) | ~np.isfinite(yw) | (np.hypot(xw - x, yw - y) > fwhm)
    return np.where(bad, x, xw), np.where(bad, y, yw)


#: peak pixel / isophotal flux above which a source of the background's
#: first pass is sharper than any PSF (a Gaussian of 1.2 px FWHM puts 0.47
#: of its light in one pixel): a cosmic ray or a hot pixel
SHARP_PEAK_FRACTION = 0.5
#: this fraction of sharp detections (and at least MIN_STARS) says the frame
#: has cosmic rays to remove before anything else
COSMIC_RAY_FRACTION = 0.2
#: a peak sharper than the PSF by this many sigma, and by this fraction of
#: itself, is a cosmic ray or a hot pixel (``peak_excess``)
SHARP_SIGMA, SHARP_FRACTION = 5.0, 0.5


def needs_cosmic_ray_removal(detections):
    """True when the detections with most of their light in one pixel are
    many: a raw, unstacked exposure."""
    n_sharp = int(single_pixel(detections.objs).sum())
    return n_sharp >= MIN_STARS and n_sharp > COSMIC_RAY_FRACTION * len(detections)


def single_pixel(objs):
    """Sources with more than ``SHARP_PEAK_FRACTION`` of their light in one pixel."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return objs["peak"] / objs["flux"] > SHARP_PEAK_FRACTION


#: detections that size the sharpest stars: S/N, and how many are needed
SHARPEST_MIN_SNR, SHARPEST_MIN_COUNT = 20.0, 10


def sharpest_star_fwhm(objs, snr):
    """The FWHM (px) of the sharpest stars: the 10th percentile of the
    second-moment FWHM of the round, significant detections that are not
    single pixels (infinite with fewer than ``SHARPEST_MIN_COUNT``).  Below
    the detection filter's FWHM when the PSF is undersampled: a star's
    central pixel is then as prominent as the sharpness test's PSF allows
    only for a narrower PSF."""
    with np.errstate(divide="ignore", invalid="ignore"):
        use = (snr > SHARPEST_MIN_SNR) & (objs["b"] / objs["a"] > 0.6) & ~single_pixel(objs)
    if use.sum() < SHARPEST_MIN_COUNT:
        return np.inf
    return float(2.3548 * np.percentile(np.sqrt(0.5 * (objs["a"][use] ** 2 + objs["b"][use] ** 2)), 10))


def moffat_contrast(fwhm, beta=3.0):
    """``peak_excess``'s contrast for a Moffat star of ``fwhm`` px centred on a pixel."""
    dy, dx = np.mgrid[-1:2, -1:2].astype(float)
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    values = (1.0 + (dx ** 2 + dy ** 2) / alpha ** 2) ** (-beta)
    return float(values[1, 1] / np.median(np.delete(values.ravel(), 4)))


def sharper_than_psf(data_sub, xpeak, ypeak, rms, gain, contrast):
    """Sources whose brightest pixel is sharper than the PSF allows, by
    ``SHARP_SIGMA`` and by ``SHARP_FRACTION`` of its value (``peak_excess``)."""
    excess, noise, peak = peak_excess(data_sub, xpeak, ypeak, rms, gain, contrast)
    return (excess > SHARP_SIGMA * noise) & (excess > SHARP_FRACTION * peak)


def peak_excess(data_sub, xpeak, ypeak, rms, gain, contrast):
    """How much sharper than the PSF each source's brightest pixel is:
    (excess, noise, peak), where excess = peak - contrast * (median of its eight
    neighbours), ``contrast`` being that ratio for a star centred on a pixel
    (the sharpest a star can be).  A star has excess <= 0 within the noise;
    a hot pixel or a cosmic ray, whose light sits in one pixel or a line of
    a few (most of the eight neighbours empty: the median, not the mean),
    has an excess of most of its peak."""
    h, w = data_sub.shape
    iy, ix = np.clip(ypeak, 1, h - 2), np.clip(xpeak, 1, w - 2)
    dy, dx = np.array([-1, -1, -1, 0, 0, 1, 1, 1]), np.array([-1, 0, 1, -1, 1, -1, 0, 1])
    peak = data_sub[iy, ix].astype(float)
    ring = np.median(data_sub[iy[:, None] + dy, ix[:, None] + dx], axis=1).astype(float)
    sky_var = rms[iy, ix].astype(float) ** 2
    # the median of 8 values has about (pi/2) / 8 of one value's variance
    noise = np.sqrt(sky_var + np.clip(peak, 0, None) / gain
                    + contrast ** 2 * (sky_var + np.clip(ring, 0, None) / gain) * np.pi / 16.0)
    return peak - contrast * ring, noise, peak


#: a detection elongated beyond the PSF: a >= ELONGATED_A psf sigmas, b/a <= ELONGATED_AXIS_RATIO
ELONGATED_A, ELONGATED_AXIS_RATIO = 2.0, 0.5
#: a trail is at least this long (FWHM) ...
TRAIL_MIN_LENGTH_FWHM = 20.0
#: ... no wider (rms across, in PSF sigmas) ...
TRAIL_MAX_WIDTH_SIGMA = 2.5
#: ... and covers this fraction of its length (FWHM-long steps) with pixels
TRAIL_MIN_COVERAGE = 0.5
#: at most this many trails are looked for, and this many pixels vote
MAX_TRAILS, MAX_VOTING_PIXELS = 5, 50000


@dataclass
class Trail:
    """A straight trail: unit direction (cos theta, sin theta) through
    (x0, y0), from s_min to s_max along it, ``half_width`` pixels either side."""
    theta: float
    x0: float
    y0: float
    s_min: float
    s_max: float
    half_width: float

    def covers(self, x, y, margin=0.0):
        """Points on the trail (within ``margin`` px beyond its ends)."""
        dx, dy = np.asarray(x) - self.x0, np.asarray(y) - self.y0
        along = dx * np.cos(self.theta) + dy * np.sin(self.theta)
        across = -dx * np.sin(self.theta) + dy * np.cos(self.theta)
        return (np.abs(across) < self.half_width) & (along > self.s_min - margin) & (along < self.s_max + margin)


def find_trails(objs, segments, fwhm):
    """Straight trails (satellites, aircraft, meteors) in the detections.

    The pixels of the detections elongated beyond the PSF (faint trails
    break into elongated pieces; bright ones swallow the stars they cross)
    vote in a Hough transform; the strongest line is fitted to the pixels
    near it and kept if it is long, as narrow as the PSF and filled along
    its length, then its pixels are removed and the next line is looked for.
    A galaxy is too wide, a chance alignment of pieces too sparse."""
    sigma = fwhm / 2.3548
    elongated = (objs["a"] >= ELONGATED_A * sigma) & (objs["b"] <= ELONGATED_AXIS_RATIO * objs["a"])
    if not elongated.any():
        return []
    lut = np.zeros(len(objs) + 1, dtype=bool)
    lut[1:] = elongated
    py, px = np.nonzero(lut[segments])
    if px.size > MAX_VOTING_PIXELS:
        keep = np.random.default_rng(0).choice(px.size, MAX_VOTING_PIXELS, replace=False)
        px, py = px[keep], py[keep]
    px, py = px.astype(float), py.astype(float)
    found = []
    for _ in range(MAX_TRAILS):
        trail = _strongest_line(px, py, fwhm, segments.shape)
        if trail is None:
            break
        found.append(trail)
        remaining = ~trail.covers(px, py, margin=fwhm)
        px, py = px[remaining], py[remaining]
    return found


def _strongest_line(px, py, fwhm, shape):
    """The Hough transform's strongest line through the points, fitted, or
    None when it is no trail (see ``find_trails``)."""
    min_length = TRAIL_MIN_LENGTH_FWHM * fwhm
    if px.size < min_length:
        return None
    step_rho = 2.0
    thetas = np.radians(np.arange(0.0, 180.0, 0.5))
    rho_max = float(np.hypot(*shape))
    n_rho = int(2 * rho_max / step_rho) + 2
    rho = -px[:, None] * np.sin(thetas)[None, :] + py[:, None] * np.cos(thetas)[None, :]
    cells = (np.arange(thetas.size)[None, :] * n_rho + ((rho + rho_max) / step_rho).astype(int)).ravel()
    votes = np.bincount(cells, minlength=thetas.size * n_rho)
    best = int(np.argmax(votes))
    if votes[best] < min_length:          # fewer pixels than one pixel row along a minimal trail
        return None
    theta, rho0 = thetas[best // n_rho], (best % n_rho + 0.5) * step_rho - rho_max
    near = np.abs(-px * np.sin(theta) + py * np.cos(theta) - rho0) < 2 * fwhm
    return _fitted_trail(px[near], py[near], fwhm)


def _fitted_trail(px, py, fwhm):
    """A ``Trail`` fitted to the pixels near a Hough line (principal axis),
    or None when they are too short, too wide or too sparse along it."""
    x0, y0 = px.mean(), py.mean()
    _, _, axes = np.linalg.svd(np.column_stack([px - x0, py - y0]), full_matrices=False)
    theta = float(np.arctan2(axes[0, 1], axes[0, 0]))
    along = (px - x0) * np.cos(theta) + (py - y0) * np.sin(theta)
    across = -(px - x0) * np.sin(theta) + (py - y0) * np.cos(theta)
    length = along.max() - along.min()
    width = float(np.std(across))
    steps = np.unique(np.floor((along - along.min()) / fwhm)).size
    if (length < TRAIL_MIN_LENGTH_FWHM * fwhm or width > TRAIL_MAX_WIDTH_SIGMA * fwhm / 2.3548
            or steps < TRAIL_MIN_COVERAGE * length / fwhm):
        return None
    return Trail(theta, x0, y0, float(along.min()), float(along.max()), max(3.0 * width, 1.5 * fwhm))


def stellar(objs, sharp):
    """Point-like sources: second-moment size within 0.7-1.5 of the median of
    the bright round sources, b/a > 0.6, and not ``sharp`` (rejects hot
    pixels, cosmic rays, galaxies and blends)."""
    size = np.sqrt(0.5 * (objs["a"] ** 2 + objs["b"] ** 2))
    round_ = (objs["b"] / objs["a"] > 0.6) & (objs["flag"] == 0) & (objs["npix"] >= 5) & ~sharp
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


def has_brighter_neighbour(x, y, flux, radius):
    """True for sources with a brighter one closer than ``radius`` pixels."""
    from scipy.spatial import cKDTree
    i, j = cKDTree(np.column_stack([x, y])).query_pairs(radius, output_type="ndarray").T
    brighter = np.zeros(len(x), dtype=bool)
    brighter[i[flux[j] > flux[i]]] = True
    brighter[j[flux[i] > flux[j]]] = True
    return brighter


def artefact_mask(shape, objs, scale=3.0):
    """Pixels within ``scale`` times the sep ellipses of ``objs`` (hot pixels,
    cosmic rays), each at least half a pixel across its axes."""
    mask = np.zeros(shape, dtype=bool)
    sep.mask_ellipse(mask, objs["x"], objs["y"], np.maximum(objs["a"], 0.5), np.maximum(objs["b"], 0.5),
                     objs["theta"], r=scale)
    return mask


def footprints(shape, objs, scale=7.5):
    """Pixels within ``scale`` times each source's sep ellipse (a, b, theta):
    where a local sky or an empty-sky aperture must not look."""
    mask = np.zeros(shape, dtype=bool)
    sep.mask_ellipse(mask, objs["x"], objs["y"], objs["a"], objs["b"], objs["theta"], r=scale)
    return mask

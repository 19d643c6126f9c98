"""Images for display without matplotlib: block-averaging to a plot's size,
display limits, and the greyscale preview PNG."""
import numpy as np

MAX_PLOT_PX = 1024


def downsample(image):
    """``image`` block-averaged by the smallest integer factor that brings
    it to at most ``MAX_PLOT_PX`` pixels a side; returns (image, factor)."""
    factor = max(1, int(np.ceil(max(image.shape) / MAX_PLOT_PX)))
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    small = image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    return small, factor


def display_limits(image):
    """The 5th and 99.5th percentiles of the finite pixels (a range of at least 1)."""
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [5, 99.5]) if finite.size else (0, 1)
    return lo, hi if hi > lo else lo + 1


def write_preview(path, data):
    """An 8-bit greyscale PNG of the frame (north of the pixel grid up:
    the first row at the bottom), block-averaged to at most
    ``MAX_PLOT_PX`` pixels, between the ``display_limits``."""
    from PIL import Image
    small, _ = downsample(data)
    lo, hi = display_limits(small)
    scaled = np.nan_to_num(np.clip((small - lo) / (hi - lo), 0, 1)[::-1] * 255)
    Image.fromarray(scaled.astype(np.uint8)).save(path, compress_level=3)      # uint8: mode "L"

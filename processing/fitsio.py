"""Load the first 2-D image of a FITS file (plain, gzip or fpack)."""
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from .errors import InputError, one_line


@dataclass
class Frame:
    """Pixels (float32, ADU), their header, and the mask of unusable pixels."""
    data: np.ndarray
    header: fits.Header
    mask: np.ndarray     # True = do not use
    hdu_index: int
    #: largest value the stored integer type can hold (None for float data)
    integer_max: float | None = None
    #: what loading did to the pixels, for the log
    notes: list = field(default_factory=list)


def _first_image_hdu(hdul):
    for i, hdu in enumerate(hdul):
        naxes = [hdu.header.get(f"NAXIS{k}", 0) for k in range(1, hdu.header.get("NAXIS", 0) + 1)]
        if hdu.is_image and len(naxes) >= 2 and all(n > 0 for n in naxes):
            return i, hdu
    return None, None


def _integer_max(header):
    """Top of the stored integer range, honouring the unsigned BZERO convention."""
    bitpix = header.get("BITPIX", -32)
    if bitpix < 0:
        return None
    unsigned = float(header.get("BZERO", 0.0)) == 2.0 ** (bitpix - 1)
    return float(2 ** bitpix - 1 if unsigned else 2 ** (bitpix - 1) - 1)


def load_frame(path):
    """Read the first image HDU with data; raise ``InputError`` when unusable.

    Degenerate axes of length 1 (NAXIS3 = 1) are dropped; a real cube is
    refused.  Non-finite pixels are masked, never replaced silently.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                hdul.verify("silentfix")
                index, hdu = _first_image_hdu(hdul)
                if hdu is None:
                    raise InputError(f"{_name(path)} holds no image: no HDU with a 2-D data array")
                integer_max = _integer_max(hdu.header)
                data = hdu.data
                if data is None:
                    raise InputError(f"{_name(path)} holds no image data")
                data = np.asarray(data)
                header = hdu.header.copy()
                if index > 0:       # inherit primary keywords the image HDU lacks
                    for card in hdul[0].header.cards:
                        if card.keyword not in header and card.keyword not in (
                                "SIMPLE", "EXTEND", "NAXIS", "BITPIX", "COMMENT", "HISTORY", ""):
                            header.append(card)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{_name(path)} is not a readable FITS file ({one_line(exc, 160)})") from exc

    data = np.squeeze(data)
    if data.ndim != 2:
        raise InputError(f"{_name(path)} has a {data.ndim}-D image of shape {data.shape};"
                         " submit one 2-D frame per file")
    if min(data.shape) < 16:
        raise InputError(f"{_name(path)}: image of {data.shape[1]}x{data.shape[0]} pixels is too small")
    data = data.astype(np.float32)
    notes = []
    data, header = _overscan_and_trim(data, header, notes)
    mask = ~np.isfinite(data)
    if mask.all():
        raise InputError(f"{_name(path)}: every pixel is NaN or infinite")
    good = data[~mask]
    if np.ptp(good) == 0:
        raise InputError(f"{_name(path)}: every pixel has the same value ({good[0]:g}); the frame is empty")
    data[mask] = 0.0
    return Frame(data=data, header=header, mask=mask, hdu_index=index, integer_max=integer_max,
                 notes=notes)


_SECTION = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")


def _section(value, shape):
    """numpy slices of an IRAF section '[x1:x2,y1:y2]' (1-based, inclusive), or None."""
    match = _SECTION.match(str(value).strip())
    if not match:
        return None
    x1, x2, y1, y2 = (int(g) for g in match.groups())
    h, w = shape
    if not (1 <= x1 <= x2 <= w and 1 <= y1 <= y2 <= h):
        return None
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def _overscan_and_trim(data, header, notes):
    """Raw CCD frames: subtract the overscan (BIASSEC) median, keep TRIMSEC.

    The WCS reference pixel moves with the trim; the section keywords are
    removed so the product is not trimmed twice by another tool.
    """
    bias = _section(header.get("BIASSEC", ""), data.shape)
    trim = _section(header.get("TRIMSEC", ""), data.shape)
    if bias is not None and trim is not None:
        level = float(np.nanmedian(data[bias]))
        data = data - level
        notes.append(f"overscan {header['BIASSEC'].strip()} median {level:.1f} ADU subtracted")
        header.add_history(f"RAPAS: overscan {header['BIASSEC'].strip()} ({level:.2f} ADU) subtracted")
    if trim is not None:
        data = np.ascontiguousarray(data[trim])
        dy, dx = trim[0].start, trim[1].start
        for key, delta in (("CRPIX1", dx), ("CRPIX2", dy)):
            if key in header:
                header[key] = header[key] - delta
        notes.append(f"trimmed to {header['TRIMSEC'].strip()}")
        header.add_history(f"RAPAS: trimmed to {header['TRIMSEC'].strip()}")
        for key in ("TRIMSEC", "BIASSEC", "DATASEC"):
            header.remove(key, ignore_missing=True)
    return data, header


def _name(path):
    return str(path).rsplit("/", 1)[-1]


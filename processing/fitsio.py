"""Load a submitted frame as one 2-D image of linear pixels (plain, gzip or fpack FITS).

What loading does, each step noted for the log:
- refuses files that are not FITS (TIFF, camera raw, PNG, JPEG, XISF) with
  what to do instead;
- assembles raw multi-amplifier frames (``camera.assemble_amplifiers``),
  refusing what it cannot assemble rather than reducing one amplifier;
- subtracts the overscan (BIASSEC) and keeps TRIMSEC (or DATASEC) of a raw
  single-amplifier frame;
- finds the clip level from the data (``camera.saturation_from_data``);
- reduces one colour plane of a raw Bayer mosaic at half resolution.
The header's WCS keywords follow every change of the pixel grid.
"""
import gzip
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from . import camera
from .config import Config
from .errors import InputError, one_line


@dataclass
class Frame:
    """Pixels (float32, ADU or electrons), their header, and the mask of unusable pixels."""
    data: np.ndarray
    header: fits.Header
    mask: np.ndarray     # True = do not use
    hdu_index: int
    #: largest value the stored integer type can hold (None for float data)
    integer_max: float | None = None
    #: clip level found in the data (same units as ``data``), or None
    saturation: float | None = None
    #: the Bayer colour plane reduced (G, R or B), or None
    colour_plane: str | None = None
    #: what loading did to the pixels, for the log
    notes: list = field(default_factory=list)


#: leading bytes of image formats people submit instead of FITS
OTHER_FORMATS = (
    (b"II*\x00", "TIFF (or a camera raw file such as CR2 or NEF)"),
    (b"MM\x00*", "TIFF (or a camera raw file such as NEF)"),
    (b"\x89PNG", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"XISF0100", "XISF (PixInsight)"),
    (b"FUJIFILM", "Fujifilm RAF camera raw"),
    (b"IIRO", "Olympus ORF camera raw"),
    (b"IIU\x00", "Panasonic RW2 camera raw"),
)


def _why_unreadable(exc):
    """astropy's reason a file is no FITS, in an observer's words where
    astropy's own names its options ("try with ignore_missing_simple=True")."""
    text = one_line(exc, 160)
    if "No SIMPLE card found" in text:
        return "it does not begin with a FITS header"
    if "Empty or corrupt FITS file" in text:
        return "it is empty or not FITS"
    return text


def _refuse_other_formats(path):
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, kind in OTHER_FORMATS:
        if head.startswith(magic):
            raise InputError(f"{_name(path)} is a {kind} file, not FITS: convert it to FITS with the original"
                             " pixels (16-bit linear, not stretched or colour-balanced), e.g. with Siril"
                             " or PixInsight, and submit that")


BLOCK = 2880


def _axes(header):
    """The lengths of a header's data axes (NAXIS1, NAXIS2, ...)."""
    return [int(header.get(f"NAXIS{k}", 0)) for k in range(1, int(header.get("NAXIS", 0)) + 1)]


def _refuse_gzip_bomb(path, max_pixels):
    """For a gzip file, read its headers in the decompressed stream up to
    the first image's (astropy decompresses the whole file to open it: 15 s
    for a 6-MB file declaring 6 GB of zeros) and refuse it when that image
    declares more than ``max_pixels``.  Later HDUs are left to
    ``_image_hdus``, which refuses them before their pixels are read: a
    legitimate frame is not decompressed twice."""
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return
    with gzip.open(path, "rb") as stream:
        while (header := _next_header(stream)) is not None:
            naxes = _axes(header)
            if len(naxes) >= 2 and str(header.get("XTENSION", "IMAGE")).strip() == "IMAGE":
                _refuse_pixels(path, int(np.prod(naxes, dtype=np.float64)), max_pixels)
                return
            size = abs(int(header.get("BITPIX", 8))) // 8 * int(header.get("GCOUNT", 1)) * (
                int(header.get("PCOUNT", 0)) + (int(np.prod(naxes, dtype=np.float64)) if naxes else 0))
            for _ in range(-(-size // BLOCK)):
                if len(stream.read(BLOCK)) < BLOCK:
                    return


def _next_header(stream):
    """The next FITS header in a stream, or None at its end (or when it is
    not FITS: astropy then says what it is)."""
    cards = b""
    while len(cards) < 1000 * BLOCK:
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            return None
        cards += block
        if any(block[k:k + 8] == b"END     " for k in range(0, BLOCK, 80)):
            return fits.Header.fromstring(cards.decode("ascii", "replace"))
    return None


def _refuse_pixels(path, declared, max_pixels):
    if declared > max_pixels:
        raise InputError(f"{_name(path)} declares {declared / 1e6:,.0f} million pixels, more than this"
                         f" archive reduces ({max_pixels / 1e6:,.0f} million): bin or crop the frame"
                         " and submit it again")


def _image_hdus(hdul, path, max_pixels):
    """(index, hdu) of every HDU holding an image of two or more axes.

    Refused as soon as the images' headers declare more than ``max_pixels``
    pixels in all, before the pixels are read or decompressed (astropy
    reads HDUs, and decompresses fpack tiles, only when asked).
    """
    found, declared = [], 0
    for i, hdu in enumerate(hdul):
        naxes = _axes(hdu.header)
        if hdu.is_image and len(naxes) >= 2 and all(n > 0 for n in naxes):
            found.append((i, hdu))
            declared += int(np.prod(naxes, dtype=np.float64))
            _refuse_pixels(path, declared, max_pixels)
    return found


def _integer_max(header):
    """Top of the stored integer range, honouring the unsigned BZERO convention."""
    bitpix = header.get("BITPIX", -32)
    if bitpix < 0:
        return None
    unsigned = float(header.get("BZERO", 0.0)) == 2.0 ** (bitpix - 1)
    return float(2 ** bitpix - 1 if unsigned else 2 ** (bitpix - 1) - 1)


def _with_primary(header, primary):
    """``header`` completed with the primary header's keywords it lacks."""
    header = header.copy()
    for card in primary.cards:
        if card.keyword not in header and card.keyword not in (
                "SIMPLE", "EXTEND", "NAXIS", "BITPIX", "COMMENT", "HISTORY", ""):
            header.append(card)
    return header


def _read(path, notes, max_pixels):
    """(data, header, hdu index, integer max, saturation) of the file's frame."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path, memmap=False) as hdul:
            images = _image_hdus(hdul, path, max_pixels)
            hdul.verify("silentfix")
            if not images:
                raise InputError(f"{_name(path)} holds no image: no HDU with a 2-D data array")
            headers = [hdu.header for _, hdu in images]
            if camera.is_amplifier_set(headers):
                return _assembled(hdul, images, notes)
            index, hdu = images[0]
            if hdu.data is None:
                raise InputError(f"{_name(path)} holds no image data")
            header = _with_primary(hdu.header, hdul[0].header) if index > 0 else hdu.header.copy()
            if len(images) > 1:
                notes.append(f"HDU {index} reduced; {len(images) - 1} other image HDU(s) ignored")
            return np.asarray(hdu.data), header, index, _integer_max(hdu.header), None


def _assembled(hdul, images, notes):
    """(data, header, ...) as ``_read``: the amplifiers assembled into one frame
    in electrons (``camera.assemble_amplifiers``) under the primary header,
    which holds the observation and the WCS of the assembled frame."""
    amplifiers = [camera.Amplifier(np.asarray(hdu.data, dtype=np.float64), hdu.header,
                                   str(hdu.header.get("EXTNAME") or hdu.header.get("AMPNAME") or i))
                  for i, hdu in images]
    data, saturation, rdnoise = camera.assemble_amplifiers(amplifiers, notes)
    header = hdul[0].header.copy()          # the pointing WCS and the observation
    for key in ("GAIN", "RDNOISE", "SATURATE", "BIASSEC", "TRIMSEC", "DATASEC", "DETSEC", "CCDSEC"):
        header.remove(key, ignore_missing=True, remove_all=True)
    if all(camera.positive(amp.header.get("GAIN")) for amp in amplifiers):
        header["GAIN"] = (1.0, "[e-/ADU] amplifiers assembled in electrons")
    if rdnoise:
        header["RDNOISE"] = (rdnoise, "[e-] median of the amplifiers'")
    for card in amplifiers[0].header.cards:           # what the observation keywords lack
        if card.keyword in ("DATE-OBS", "EXPTIME", "FILTER", "MJD-OBS") and card.keyword not in header:
            header.append(card)
    return data, header, images[0][0], None, saturation


def load_frame(path, colour="G", max_pixels=Config.max_image_pixels):
    """Read the frame; raise ``InputError`` when unusable.  ``colour`` is the
    plane (G, R or B) reduced from a raw Bayer mosaic; ``max_pixels`` the
    largest image read.

    Degenerate axes of length 1 (NAXIS3 = 1) are dropped; a real cube is
    refused.  Non-finite pixels are masked, never replaced silently.
    """
    notes = []
    try:
        _refuse_other_formats(path)
        _refuse_gzip_bomb(path, max_pixels)
        data, header, index, integer_max, saturation = _read(path, notes, max_pixels)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{_name(path)} is not a readable FITS file ({_why_unreadable(exc)})") from exc

    declared = data.shape
    data = np.squeeze(data)
    if data.ndim < 2 <= len(declared):
        raise InputError(f"{_name(path)}: image of {declared[-1]}x{declared[-2]} pixels is too small")
    if data.ndim != 2:
        raise InputError(f"{_name(path)} has a {data.ndim}-D image of shape {data.shape};"
                         " submit one 2-D frame per file")
    if min(data.shape) < 16:
        raise InputError(f"{_name(path)}: image of {data.shape[1]}x{data.shape[0]} pixels is too small")
    data = data.astype(np.float32)
    if saturation is None:
        saturation = camera.saturation_from_data(data)
    data, header, bias = _overscan_and_trim(data, header, notes)
    if saturation is not None:
        saturation -= bias
        notes.append(f"clip level {saturation:.0f} found in the data (pile-up of the brightest pixels)")
    plane = None
    pattern = camera.cfa_pattern(header)
    if pattern is not None:
        data, header = _colour_plane(data, header, pattern, colour, saturation, notes)
        plane = colour
    mask = ~np.isfinite(data)
    if mask.all():
        raise InputError(f"{_name(path)}: every pixel is NaN or infinite")
    good = data[~mask]
    if np.ptp(good) == 0:
        raise InputError(f"{_name(path)}: every pixel has the same value ({good[0]:g}); the frame is empty")
    data[mask] = 0.0
    return Frame(data=data, header=header, mask=mask, hdu_index=index, integer_max=integer_max,
                 saturation=saturation, colour_plane=plane, notes=notes)


def _overscan_and_trim(data, header, notes):
    """Raw CCD frames: subtract the overscan (BIASSEC) median, keep TRIMSEC
    (or DATASEC).  Returns (data, header, overscan level subtracted).

    The WCS reference pixel moves with the trim; the section keywords are
    removed so the product is not trimmed twice by another tool.
    """
    bias = camera.Section.parse(header.get("BIASSEC"))
    trim = camera.Section.parse(header.get("TRIMSEC")) or camera.Section.parse(header.get("DATASEC"))
    bias = bias if bias is not None and bias.fits_in(data.shape) else None
    trim = trim if trim is not None and trim.fits_in(data.shape) else None
    level = 0.0
    if bias is not None and trim is not None:
        level = float(np.nanmedian(data[bias.slices()]))
        data = data - level
        notes.append(f"overscan {header['BIASSEC'].strip()} median {level:.1f} ADU subtracted")
        header.add_history(f"RAPAS: overscan {header['BIASSEC'].strip()} ({level:.2f} ADU) subtracted")
    if trim is not None and trim.slices() != (slice(0, data.shape[0]), slice(0, data.shape[1])):
        rows, cols = trim.slices()
        data = np.ascontiguousarray(data[rows, cols])
        camera.regrid_wcs(header, 1, (rows.start, cols.start))
        notes.append(f"trimmed to {trim.x1}:{trim.x2},{trim.y1}:{trim.y2}")
        header.add_history(f"RAPAS: trimmed to [{trim.x1}:{trim.x2},{trim.y1}:{trim.y2}]")
    for key in ("TRIMSEC", "BIASSEC", "DATASEC"):
        header.remove(key, ignore_missing=True)
    return data, header, level


def _colour_plane(data, header, pattern, colour, saturation, notes):
    """One colour plane of a raw Bayer mosaic, the WCS moved to its pixels."""
    if colour not in camera.PLANE_BANDS:
        raise InputError(f"colour plane {colour!r}: use G, R or B")
    top = saturation if saturation is not None else np.inf
    plane, offset, n_pixels = camera.colour_plane(data, pattern, colour, top)
    camera.regrid_wcs(header, 2, offset)
    header["CFAPAT"] = (pattern, "colour filter array of the submitted mosaic")
    header["CFAPLANE"] = (colour, "colour plane reduced (half resolution)")
    gain = camera.positive(header.get("GAIN"))
    if gain and n_pixels > 1:       # the mean of n pixels holds n times the electrons per ADU
        header["GAIN"] = (gain * n_pixels, "[e-/ADU] of the averaged colour plane")
    if camera.positive(header.get("RDNOISE")) and n_pixels > 1:
        header["RDNOISE"] = (float(header["RDNOISE"]) * np.sqrt(n_pixels), "[e-] of the averaged colour plane")
    notes.append(f"raw Bayer mosaic ({pattern}): the {colour} plane ({n_pixels} pixel(s) of each 2x2 cell"
                 f"{', averaged' if n_pixels > 1 else ''}) reduced at half resolution,"
                 f" {plane.shape[1]}x{plane.shape[0]} pixels, as band {camera.PLANE_BANDS[colour]}")
    return plane, header


def _name(path):
    return str(path).rsplit("/", 1)[-1]

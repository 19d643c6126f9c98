"""What cameras write, turned into one frame of linear pixels.

- ``saturation_from_data``: the level where a camera clips, from the pile-up
  of identical values at the top of the histogram (a 14-bit DSLR clips near
  13 600 ADU, far below its 16-bit container's 65 535);
- ``Section`` and ``assemble_amplifiers``: raw multi-amplifier frames
  (one HDU per amplifier with DATASEC, BIASSEC and DETSEC or CCDSEC), each
  overscan-subtracted, multiplied by its gain and placed on the detector;
- ``colour_plane``: one colour of a raw Bayer (colour filter array) mosaic
  at half resolution, the green diagonal found from the data.

Pixel coordinates are 0-based (numpy); IRAF sections are 1-based and
inclusive, ``[x1:x2,y1:y2]``, reversed when x1 > x2 (a flipped readout).
"""
import re
from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: a value shared by this many pixels at the top of the histogram is a clip level
MIN_PILE_UP = 10


def saturation_from_data(data):
    """The clip level (ADU) if the brightest pixels pile up at one value, else None.

    A camera that saturates writes its full-well or ADC maximum into every
    saturated pixel: one value, far more frequent than its neighbours.  The
    pixels examined are the brightest: above 70 % of the way from the median
    to the maximum, or above the 99.9th percentile if that is lower (a few
    pixels above the clip level, hot or corrupt, do not hide it).
    """
    sample = data[::4, ::4]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return None
    median, top = float(np.median(sample)), float(np.nanmax(data))
    bright = data[data >= min(median + 0.7 * (top - median), float(np.percentile(sample, 99.9)))]
    if bright.size < MIN_PILE_UP:
        return None
    levels, counts = np.unique(bright, return_counts=True)
    k = int(np.argmax(counts))
    neighbours = np.concatenate([counts[max(0, k - 5):k], counts[k + 1:k + 6]])
    typical = float(np.median(neighbours)) if neighbours.size else 0.0
    if counts[k] >= MIN_PILE_UP and counts[k] >= 10 * max(typical, 1.0):
        return float(levels[k])
    return None


_SECTION = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")


@dataclass(frozen=True)
class Section:
    """An IRAF section: 1-based inclusive corners, possibly reversed."""
    x1: int
    x2: int
    y1: int
    y2: int

    @classmethod
    def parse(cls, value):
        match = _SECTION.match(str(value or "").strip())
        return cls(*(int(g) for g in match.groups())) if match else None

    @property
    def width(self):
        return abs(self.x2 - self.x1) + 1

    @property
    def height(self):
        return abs(self.y2 - self.y1) + 1

    def fits_in(self, shape):
        h, w = shape
        return 1 <= min(self.x1, self.x2) and max(self.x1, self.x2) <= w \
            and 1 <= min(self.y1, self.y2) and max(self.y1, self.y2) <= h

    def slices(self):
        """numpy slices of the section's pixels, in increasing order."""
        return (slice(min(self.y1, self.y2) - 1, max(self.y1, self.y2)),
                slice(min(self.x1, self.x2) - 1, max(self.x1, self.x2)))

    @property
    def flipped(self):
        """(flipped in y, flipped in x)."""
        return self.y1 > self.y2, self.x1 > self.x2


@dataclass
class Amplifier:
    data: np.ndarray           # the HDU's raw pixels (ADU)
    header: object             # its FITS header
    name: str


def is_amplifier_set(headers):
    """True when several image HDUs describe parts of one detector."""
    keys = ("DATASEC", "DETSEC", "CCDSEC", "BIASSEC", "AMPNAME")
    return len(headers) >= 2 and all(any(k in h for k in keys) for h in headers)


def assemble_amplifiers(amplifiers, notes):
    """One detector frame in electrons from its amplifiers.

    Each amplifier's overscan (BIASSEC median) is subtracted and its
    DATASEC, multiplied by its GAIN, is placed at its DETSEC (or CCDSEC,
    divided by the binning), flipped where DETSEC runs backwards.  Returns
    (frame, saturation in electrons or None, read noise in electrons or
    None); raises ``InputError`` when the amplifiers do not tile a detector.
    """
    placed, gains, saturation, noise = [], [], [], []
    for amp in amplifiers:
        h = amp.header
        data_sec = Section.parse(h.get("DATASEC")) or Section(1, amp.data.shape[1], 1, amp.data.shape[0])
        det_sec = Section.parse(h.get("DETSEC")) or Section.parse(h.get("CCDSEC"))
        if det_sec is None or not data_sec.fits_in(amp.data.shape):
            raise InputError(f"amplifier {amp.name} has no usable DETSEC/CCDSEC and DATASEC: the"
                             " amplifiers cannot be assembled into one frame; submit an assembled frame")
        pixels = amp.data[data_sec.slices()].astype(np.float64)
        bias_sec = Section.parse(h.get("BIASSEC"))
        level = float(np.median(amp.data[bias_sec.slices()])) if bias_sec and bias_sec.fits_in(amp.data.shape) \
            else 0.0
        gain = positive(h.get("GAIN"))
        gains.append(gain)
        pile_up = saturation_from_data(pixels)
        sat = positive(h.get("SATURATE")) or pile_up
        flip_y, flip_x = data_sec.flipped[0] ^ det_sec.flipped[0], data_sec.flipped[1] ^ det_sec.flipped[1]
        pixels = pixels[::-1 if flip_y else 1, ::-1 if flip_x else 1]
        placed.append((det_sec, pixels - level, gain))
        if sat is not None:
            saturation.append((sat - level) * (gain or 1.0))
        if positive(h.get("RDNOISE")):
            noise.append(float(h["RDNOISE"]))
        notes.append(f"amplifier {amp.name}: overscan {level:.1f} ADU, gain {gain or 'unknown'}")
    if not all(gains) and any(gains):
        raise InputError("some amplifiers have no GAIN: they cannot be put on one scale; submit an"
                         " assembled frame")
    frame = _tile(placed)
    notes.append(f"{len(amplifiers)} amplifiers assembled into {frame.shape[1]}x{frame.shape[0]} pixels"
                 + (" (electrons)" if all(gains) else " (ADU: no GAIN keywords)"))
    return (frame.astype(np.float32), min(saturation) if saturation else None,
            float(np.median(noise)) if noise else None)


def _tile(placed):
    """Put each (DETSEC, pixels, gain) on one array; DETSEC in unbinned
    detector pixels is divided by the binning (section size / data size)."""
    binning = {round(s.width / p.shape[1]) for s, p, _ in placed} | {round(s.height / p.shape[0]) for s, p, _ in placed}
    if len(binning) != 1 or 0 in binning:
        raise InputError("the amplifiers' DETSEC and DATASEC sizes disagree: cannot assemble them")
    b = binning.pop()
    x0 = min(min(s.x1, s.x2) for s, _, _ in placed)
    y0 = min(min(s.y1, s.y2) for s, _, _ in placed)
    width = max((max(s.x1, s.x2) - x0) // b + 1 for s, _, _ in placed)
    height = max((max(s.y1, s.y2) - y0) // b + 1 for s, _, _ in placed)
    frame = np.full((height, width), np.nan)
    covered = np.zeros((height, width), dtype=int)
    for s, pixels, gain in placed:
        ys, xs = (min(s.y1, s.y2) - y0) // b, (min(s.x1, s.x2) - x0) // b
        h, w = pixels.shape
        frame[ys:ys + h, xs:xs + w] = pixels * (gain or 1.0)
        covered[ys:ys + h, xs:xs + w] += 1
    if covered.max() > 1 or covered.min() < 1:
        raise InputError("the amplifiers' DETSEC sections overlap or leave gaps: cannot assemble them"
                         " into one frame; submit an assembled frame")
    return frame


def positive(value):
    """A header value as a positive number, else None (keywords hold anything)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


# ---- Bayer mosaics ------------------------------------------------------------
CFA_PATTERNS = {"RGGB", "BGGR", "GRBG", "GBRG"}
#: the RAPAS band of each colour plane (AAVSO's DSLR names), calibrated on Gaia G, BP, RP
PLANE_BANDS = {"G": "TG", "B": "TB", "R": "TR"}


def cfa_pattern(header):
    """The colour filter array pattern (e.g. 'RGGB') of a raw mosaic, or None."""
    for key in ("BAYERPAT", "COLORTYP", "FILTER"):
        value = str(header.get(key, "")).strip().upper()
        if value in CFA_PATTERNS:
            return value
    return None


def _green_on_main_diagonal(data):
    """Whether the green pixels sit at (0,0) and (1,1) of each 2x2 cell.

    Decided from the data, whatever the row order the header's pattern was
    written in: the two green sub-images receive the same starlight (their
    brightest pixels above their own level agree), red and blue do not.
    """
    def light(sub):
        level = np.median(sub)
        top = np.sort(sub, axis=None)[-max(10, sub.size // 200):]
        return float(np.sum(top - level))
    s = {(dy, dx): light(data[dy::2, dx::2]) for dy in (0, 1) for dx in (0, 1)}
    main = abs(s[0, 0] - s[1, 1]) / max(s[0, 0] + s[1, 1], 1e-9)
    anti = abs(s[0, 1] - s[1, 0]) / max(s[0, 1] + s[1, 0], 1e-9)
    return main < anti


def _cell_positions(pattern, green_main):
    """{colour: [(dy, dx), ...]} in numpy order.  The pattern's first two
    letters are read as row 0; if that puts the greens on the other
    diagonal than the data shows, the pattern was written top-down and its
    rows are swapped."""
    rows = [pattern[:2], pattern[2:]]
    if (rows[0][0] == "G") != green_main:
        rows = rows[::-1]
    positions = {}
    for dy, row in enumerate(rows):
        for dx, colour in enumerate(row):
            positions.setdefault(colour, []).append((dy, dx))
    return positions


def colour_plane(data, pattern, colour, saturation):
    """(plane, (y offset, x offset), n_pixels): one colour of a Bayer mosaic
    at half resolution.  Plane pixel (i, j) averages that colour's pixels
    of the 2x2 cell at rows 2i, 2i+1 and columns 2j, 2j+1; its centre is at
    mosaic pixel (2i + offset_y, 2j + offset_x).  Where one of the averaged
    pixels reaches ``saturation``, the plane takes the largest, so that the
    saturation shows."""
    h, w = (data.shape[0] // 2) * 2, (data.shape[1] // 2) * 2
    cells = data[:h, :w]
    positions = _cell_positions(pattern, _green_on_main_diagonal(cells))[colour]
    subs = np.stack([cells[dy::2, dx::2] for dy, dx in positions])
    brightest = subs.max(axis=0)
    plane = np.where(brightest >= saturation, brightest, subs.mean(axis=0))
    offset = tuple(float(np.mean([p[k] for p in positions])) for k in (0, 1))
    return plane.astype(np.float32), offset, len(positions)


# ---- WCS keywords under a change of pixel grid ------------------------------------
def regrid_wcs(header, factor, offset):
    """Rewrite the header's WCS for new pixels p where the old pixel is
    ``factor * p + offset`` (0-based, offset per axis as (y, x)): a trim
    (factor 1) or a colour plane (factor 2).  CRPIX moves, CD (or CDELT)
    scales, SIP coefficients A_p_q, B_p_q, AP_p_q, BP_p_q scale by
    factor^(p+q-1); TPV terms act on world coordinates and stay."""
    off_y, off_x = offset
    for axis, off in ((1, off_x), (2, off_y)):
        key = f"CRPIX{axis}"
        if key in header:
            header[key] = (float(header[key]) - 1.0 - off) / factor + 1.0
    if factor == 1:
        return header
    for key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2", "CDELT1", "CDELT2"):
        if key in header:
            header[key] = float(header[key]) * factor
    sip = re.compile(r"^(A|B|AP|BP)_(\d+)_(\d+)$")
    for key in list(header.keys()):
        match = sip.match(key)
        if match:
            p, q = int(match.group(2)), int(match.group(3))
            header[key] = float(header[key]) * factor ** (p + q - 1)
    return header

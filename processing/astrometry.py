"""WCS: check the header's, solve blind with Astrometry.net, refine with stdpipe.

All WCS objects handed on are ICRS; distortion (SIP, TPV) is kept.
"""
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import FK4, Angle, SkyCoord
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import fit_wcs_from_points, proj_plane_pixel_scales

from .crossmatch import nearest_match
from .errors import AstrometryError, one_line

MIN_PIXSCALE, MAX_PIXSCALE = 0.03, 120.0     # arcsec/pixel considered plausible


@dataclass
class Solution:
    """The frame's WCS (ICRS, distortion kept) and how it was obtained."""
    wcs: WCS
    source: str                          # header, refined or solved
    rms_arcsec: float = np.nan           # catalogue minus WCS positions of the fitted stars
    n_stars: int = 0
    sip_order: int | None = None         # of the refined WCS


def pixel_scale_arcsec(wcs):
    return float(np.sqrt(abs(np.linalg.det(wcs.celestial.pixel_scale_matrix))) * 3600.0)


def header_wcs(header, shape):
    """The header's WCS as ICRS, or (None, reason) when it is absent or unusable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, relax=True)
        except Exception as exc:        # astropy raises many types for broken WCS keywords
            return None, f"header WCS unreadable ({one_line(exc, 120)})"
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


def _to_icrs(wcs, shape, n=12):
    """Re-fit an FK4/B1950 WCS on a pixel grid mapped to ICRS (same projection)."""
    h, w = shape
    gy, gx = np.meshgrid(np.linspace(0, h - 1, n), np.linspace(0, w - 1, n), indexing="ij")
    equinox = wcs.wcs.equinox if np.isfinite(wcs.wcs.equinox) else 1950.0
    ra, dec = wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    icrs = SkyCoord(ra * u.deg, dec * u.deg, frame=FK4(equinox=f"B{equinox:g}")).icrs
    sip = 3 if wcs.sip is not None else None
    return fit_wcs_from_points((gx.ravel(), gy.ravel()), icrs, projection="TAN", sip_degree=sip)


def pointing_hint(header):
    """(ra, dec) in degrees of the telescope pointing from common keywords, or None."""
    for ra_key, dec_key in (("RA", "DEC"), ("OBJCTRA", "OBJCTDEC"), ("RA-MNT", "DEC-MNT"),
                            ("RA_OBJ", "DEC_OBJ"), ("TELRA", "TELDEC")):
        if ra_key in header and dec_key in header:
            ra, dec = header[ra_key], header[dec_key]
            try:
                if isinstance(ra, (int, float)):
                    return float(ra), float(dec)
                return (Angle(str(ra).strip(), unit=u.hourangle).degree,
                        Angle(str(dec).strip(), unit=u.deg).degree)
            except ValueError:
                continue
    return None


def solve_blind(obj, shape, header, config, log):
    """Astrometry.net ``solve-field`` (through stdpipe) on the detected sources.

    Hints: the header pointing (2 deg radius) and the header pixel scale or a
    wide range.  Raises ``AstrometryError`` with the reason on failure.
    """
    from stdpipe.astrometry import blind_match_objects
    solver = shutil.which("solve-field")
    if solver is None:
        raise AstrometryError("no WCS in header and plate solving is unavailable"
                              " (Astrometry.net solve-field is not installed)")
    h, w = shape
    hint = pointing_hint(header)
    limit = int(np.ceil(config.solve_timeout_s))
    # --cpulimit bounds only the engine's CPU time; coreutils timeout bounds the wall time
    opts = dict(width=w, height=h, order=2, sn=10,
                extra={"cpulimit": limit, "no-verify": True, "crpix-center": True})
    if hint is not None:
        opts.update(center_ra=hint[0], center_dec=hint[1], radius=2.0)
    scale = header.get("PIXSCALE") or header.get("SECPIX") or header.get("PIXSCAL1")
    if scale:
        opts.update(scale_lower=0.8 * float(scale), scale_upper=1.25 * float(scale))
    else:
        opts.update(scale_lower=0.1, scale_upper=60.0)
    with tempfile.TemporaryDirectory(prefix="rapas-solve-") as tmp:
        wrapper = Path(tmp) / "solve-field"     # stdpipe wants an executable file
        wrapper.write_text(f'#!/bin/sh\nexec timeout -k 5 {limit} {solver} "$@"\n')
        wrapper.chmod(0o755)
        opts["_exe"] = str(wrapper)
        if config.index_dir:
            cfg = Path(tmp) / "astrometry.cfg"
            cfg.write_text(f"inparallel\nadd_path {config.index_dir}\nautoindex\n")
            opts["config"] = str(cfg)
        stars = Table(dict(x=obj["x"], y=obj["y"], flux=obj["flux"], fluxerr=obj["fluxerr"]))
        log(f"solve-field on {len(stars)} sources"
            + (f", hint RA {hint[0]:.4f} Dec {hint[1]:.4f}" if hint else ", no position hint"))
        wcs = blind_match_objects(stars, _tmpdir=tmp, **opts)
    if wcs is None:
        n_used = int(np.sum(obj["flux"] / obj["fluxerr"] > 10))
        raise AstrometryError(f"no WCS in header and plate solving failed: {n_used} stars found no"
                              f" match in the Astrometry.net index within {limit} s (the Debian"
                              " Tycho-2 index needs a field wider than about 30 arcmin)")
    return wcs


def refine(wcs, x, y, cat, fwhm_px, sip_order, log):
    """Iterative refinement against catalogue positions (already at the epoch).

    A wide one-to-one match fits a linear WCS (absorbs offsets of tens of
    arcsec and rotations of a degree); narrower matches then fit SIP
    distortion, each time rejecting pairs beyond 3 robust sigma (blends and
    stars pulled by undetected neighbours).  Returns a ``Solution`` ('refined').
    """
    from stdpipe.astrometry import refine_wcs_simple
    scale = pixel_scale_arcsec(wcs)
    cat_tab = Table(dict(RAJ2000=cat["ra"], DEJ2000=cat["dec"]))
    narrow = max(1.5, fwhm_px * scale)
    passes = ((max(15.0, 4 * fwhm_px * scale), None), (max(3.0, 1.5 * fwhm_px * scale), sip_order),
              (narrow, sip_order))
    current = wcs
    for radius_arcsec, order in passes:
        ra, dec = current.all_pix2world(x, y, 0)
        oidx, cidx, dist = nearest_match(ra, dec, cat_tab["RAJ2000"], cat_tab["DEJ2000"], radius_arcsec)
        if order is not None:
            keep = dist <= 3.0 * 1.4826 * np.median(dist) / 1.1774   # 3 sigma of a 2-D Gaussian
            oidx, cidx = oidx[keep], cidx[keep]
        need = 10 if order is None else max(10, (order + 1) * (order + 2))
        if len(oidx) < need:
            raise AstrometryError(f"astrometric refinement failed: {len(oidx)} of {len(x)} stars matched"
                                  f" the reference catalogue within {radius_arcsec:.1f} arcsec"
                                  f" ({need} needed): the header WCS may be wrong")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            new = refine_wcs_simple(Table(dict(x=x[oidx], y=y[oidx])), cat_tab[cidx], order=order,
                                    match=False)
        if new is None:
            raise AstrometryError("astrometric refinement failed: the WCS fit did not converge")
        current = new
    rms, _ = residual_rms(current, x[oidx], y[oidx], cat["ra"][cidx], cat["dec"][cidx], narrow)
    log(f"refined WCS: {len(oidx)} stars, RMS {rms:.3f} arcsec ({rms / scale:.3f} px), SIP order {sip_order}")
    return Solution(current, "refined", rms, len(oidx), sip_order)


def residual_rms(wcs, x, y, ra, dec, radius_arcsec):
    """RMS (arcsec) of catalogue-minus-WCS positions of one-to-one matched stars."""
    ora, odec = wcs.all_pix2world(x, y, 0)
    _, _, dist = nearest_match(ora, odec, ra, dec, radius_arcsec)
    if len(dist) == 0:
        return np.nan, 0
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

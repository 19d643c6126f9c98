"""Sky simulator with ground truth, for tests, the benchmark and the demo.

A frame is rendered from a Gaia-schema catalogue: stars at known positions
(WCS with SIP distortion), Moffat PSF whose FWHM varies linearly across the
field, sky with a gradient, Poisson and read noise, gain, saturation, hot
pixels and cosmic rays.  Instrumental magnitudes follow

    m_inst = m_ref - ZP - colour_term * (BP - RP),   m_inst = -2.5 log10(flux_ADU / EXPTIME)

where ``m_ref`` is the Gaia magnitude of the band's reference (G, BP or RP).
The header WCS can be offset, rotated or removed to exercise refinement and
solving; the true WCS stays in ``SimulatedFrame.true_wcs``.
"""
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS

from .filters import canonical_band
from .refcat import GAIA_MAG_COLUMN, propagate, read_gaia_package


@dataclass
class SimulatedFrame:
    image: np.ndarray          # ADU, float32 holding integers
    header: fits.Header        # what the observer would submit
    truth: Table               # one row per star: catalogue columns + x, y, flux_adu
    catalogue: Table           # Gaia-schema reference catalogue at epoch 2016.0
    extras: Table              # point sources on the image but not in the catalogue
    true_wcs: WCS
    params: dict               # zero_point, colour_term, fwhm_px, beta, sky_adu, gain, ...
    defects: Table = None      # hot pixels and cosmic rays: x, y (0-based, brightest pixel), kind
    trails: Table = None       # satellite trails: x0, y0 (a point on the line), angle_deg, adu_per_px

    def write(self, path):
        """Write as a camera would: unsigned 16-bit integers (BITPIX 16, BZERO 32768)."""
        hdu = fits.PrimaryHDU(self.image.astype(np.uint16), self.header)
        hdu.writeto(path, overwrite=True)
        return path

    def moffat_alpha(self, fwhm):
        beta = self.params["beta"]
        return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))

    def encircled_energy(self, radius_px, fwhm):
        """Fraction of a Moffat star's flux inside ``radius_px``."""
        alpha = self.moffat_alpha(fwhm)
        return 1.0 - (1.0 + (radius_px / alpha) ** 2) ** (1.0 - self.params["beta"])

    def pixel_noise_adu(self, sky_adu):
        """Per-pixel background noise (ADU): sky photons and read noise."""
        gain, rdnoise = self.params["gain"], self.params["rdnoise"]
        return np.sqrt(sky_adu * gain + rdnoise ** 2) / gain

    def expected_mag_error(self, flux_adu, x, y, radius_px, n_annulus_px=np.inf):
        """Photon + read + sky noise of an aperture magnitude (mag)."""
        fwhm = self.fwhm_at(x, y)
        f_ap = flux_adu * self.encircled_energy(radius_px, fwhm)
        npix = np.pi * radius_px ** 2
        sigma_pix = self.pixel_noise_adu(self.sky_at(x, y))
        var = f_ap / self.params["gain"] + npix * sigma_pix ** 2 * (1.0 + npix / n_annulus_px)
        return 2.5 / np.log(10) * np.sqrt(var) / f_ap

    def limiting_mag(self, radius_px, nsigma=5.0):
        """Magnitude (band system, colour 0) of a star detected at ``nsigma``
        in an aperture of ``radius_px`` at the field centre, after correction
        of that aperture to total flux."""
        h, w = self.image.shape
        x, y = 0.5 * (w - 1), 0.5 * (h - 1)
        ee = self.encircled_energy(radius_px, self.fwhm_at(x, y))
        npix = np.pi * radius_px ** 2
        bg_var = npix * self.pixel_noise_adu(self.sky_at(x, y)) ** 2
        g = self.params["gain"]
        # solve f = n * sqrt(f/g + bg_var) for the flux in the aperture
        f_ap = 0.5 * (nsigma ** 2 / g + np.sqrt(nsigma ** 4 / g ** 2 + 4 * nsigma ** 2 * bg_var))
        return self.params["zero_point"] - 2.5 * np.log10(f_ap / ee / self.params["exptime"])

    def psf_limiting_mag(self, nsigma=5.0, subsample=5):
        """Magnitude (band system, colour 0) of a star measured at ``nsigma``
        by a PSF fit (the optimal, PSF-weighted flux) at the field centre:
        flux f with f = n sigma_f, sigma_f^2 = sum P^2 (s^2 + f P / g) /
        (sum P^2)^2 for the pixel-integrated PSF P (unit sum) and pixel
        noise s; the sums are averaged over sub-pixel positions."""
        h, w = self.image.shape
        x, y = 0.5 * (w - 1), 0.5 * (h - 1)
        alpha2 = self.moffat_alpha(self.fwhm_at(x, y)) ** 2
        half = int(np.ceil(6 * self.params["fwhm_px"]))
        sub = (np.arange(subsample) + 0.5) / subsample - 0.5
        pixel = np.arange(-half, half + 1)
        s2 = s3 = 0.0
        for phase_x, phase_y in ((0.0, 0.0), (0.25, 0.0), (0.5, 0.25), (0.5, 0.5)):
            dx = (pixel[:, None] - phase_x + sub[None, :]).ravel()
            dy = (pixel[:, None] - phase_y + sub[None, :]).ravel()
            prof = (1.0 + (dy[:, None] ** 2 + dx[None, :] ** 2) / alpha2) ** (-self.params["beta"])
            psf = prof.reshape(pixel.size, subsample, pixel.size, subsample).sum(axis=(1, 3))
            psf /= psf.sum()
            s2, s3 = s2 + np.sum(psf ** 2) / 4, s3 + np.sum(psf ** 3) / 4
        noise2, g = self.pixel_noise_adu(self.sky_at(x, y)) ** 2, self.params["gain"]
        b = nsigma ** 2 * s3 / (g * s2 ** 2)
        flux = 0.5 * (b + np.sqrt(b ** 2 + 4 * nsigma ** 2 * noise2 / s2))
        return self.params["zero_point"] - 2.5 * np.log10(flux / self.params["exptime"])

    def fwhm_at(self, x, y):
        p = self.params
        h, w = self.image.shape
        return p["fwhm_px"] * (1.0 + p["fwhm_gradient"] * ((np.asarray(x) / (w - 1) - 0.5)
                                                          + (np.asarray(y) / (h - 1) - 0.5)))

    def sky_at(self, x, y):
        p = self.params
        h, w = self.image.shape
        return p["sky_adu"] * (1.0 + p["sky_gradient"] * (np.asarray(x) / (w - 1) - 0.5))


def write_amplifiers(sim, path, gains=(1.2, 1.6, 2.1, 1.4), bias=(1000.0, 1180.0, 930.0, 1260.0),
                     overscan=16, seed=0):
    """Write ``sim`` as a raw four-amplifier camera would: a primary header
    (the observation and the WCS of the assembled frame) and one image HDU
    per quadrant, each read out from its own corner (stored flipped, its
    DETSEC reversed), in ADU of its own gain above its own bias, with
    ``overscan`` columns of bias and read noise beside the data
    (DATASEC, BIASSEC, DETSEC, GAIN, RDNOISE)."""
    rng = np.random.default_rng(seed)
    h, w = sim.image.shape
    hh, hw = h // 2, w // 2
    electrons = sim.image.astype(np.float64) * sim.params["gain"]
    primary = fits.PrimaryHDU(header=sim.header.copy())
    for key in ("GAIN", "RDNOISE", "SATURATE"):
        primary.header.remove(key, ignore_missing=True)
    hdus = [primary]
    for k, (qy, qx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        quadrant = electrons[qy * hh:(qy + 1) * hh, qx * hw:(qx + 1) * hw][::-1 if qy else 1, ::-1 if qx else 1]
        read_noise = sim.params["rdnoise"] / gains[k]
        raw = np.empty((hh, hw + overscan))
        raw[:, :hw] = quadrant / gains[k] + bias[k]
        raw[:, hw:] = bias[k] + rng.normal(0.0, read_noise, (hh, overscan))
        x1, x2 = (w, hw + 1) if qx else (1, hw)
        y1, y2 = (h, hh + 1) if qy else (1, hh)
        header = fits.Header([("EXTNAME", f"AMP{k + 1}"), ("DATASEC", f"[1:{hw},1:{hh}]"),
                              ("BIASSEC", f"[{hw + 1}:{hw + overscan},1:{hh}]"), ("DETSEC", f"[{x1}:{x2},{y1}:{y2}]"),
                              ("GAIN", gains[k], "[e-/ADU]"), ("RDNOISE", sim.params["rdnoise"], "[e-]")])
        hdus.append(fits.ImageHDU(np.clip(np.round(raw), 0, 65535).astype(np.uint16), header))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def make_wcs(shape, ra, dec, pixscale_arcsec, rotation_deg=0.0, sip=True, flip=False):
    """TAN (-SIP) WCS centred on the frame; ``flip`` mirrors the parity."""
    h, w = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [0.5 * (w + 1), 0.5 * (h + 1)]
    scale = pixscale_arcsec / 3600.0
    rot = np.radians(rotation_deg)
    parity = 1.0 if flip else -1.0
    # CD = scale * R(rot) * diag(parity, 1): parity -1 is the usual East-left sky
    wcs.wcs.cd = scale * np.array([[parity * np.cos(rot), -np.sin(rot)],
                                   [parity * np.sin(rot), np.cos(rot)]])
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.equinox = 2000.0
    if sip:
        from astropy.wcs import Sip
        r = 0.5 * max(w, h)
        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        # about 1 px of barrel-like distortion at the frame edge
        a[2, 0], a[0, 2], a[1, 1] = 0.6 / r ** 2, 0.3 / r ** 2, -0.4 / r ** 2
        b[0, 2], b[2, 0], b[1, 1] = 0.5 / r ** 2, -0.3 / r ** 2, 0.35 / r ** 2
        a[3, 0], b[0, 3] = 0.4 / r ** 3, 0.4 / r ** 3
        wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
    return wcs


def perturb_wcs(wcs, offset_arcsec=0.0, rotation_deg=0.0, keep_sip=False):
    """Header WCS as a rough telescope pointing would give it: shifted along
    +Dec by ``offset_arcsec`` and rotated by ``rotation_deg``, SIP dropped."""
    out = WCS(naxis=2)
    out.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    out.wcs.crpix = wcs.wcs.crpix
    out.wcs.crval = [wcs.wcs.crval[0], wcs.wcs.crval[1] + offset_arcsec / 3600.0]
    rot = np.radians(rotation_deg)
    rmat = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    out.wcs.cd = rmat @ wcs.wcs.cd
    out.wcs.radesys = "ICRS"
    out.wcs.equinox = 2000.0
    if keep_sip and wcs.sip is not None:
        out.wcs.ctype = list(wcs.wcs.ctype)
        out.sip = wcs.sip
    return out


def _synthetic_stars(rng, n, shape, border, mag_range, colour_range):
    h, w = shape
    # a power law in brightness like a real field: many more faint stars
    u = rng.uniform(size=n)
    lo, hi = mag_range
    k = 0.3 * np.log(10)
    mag = lo + np.log1p(u * np.expm1(k * (hi - lo))) / k
    return dict(
        x=rng.uniform(border, w - 1 - border, n),
        y=rng.uniform(border, h - 1 - border, n),
        g=mag,
        colour=rng.uniform(*colour_range, n),
    )


def simulate_frame(
    shape=(1024, 1024), n_stars=800, seed=1, ra=150.0, dec=20.0, pixscale=1.2,
    rotation_deg=12.0, flip=False, band="G", zero_point=24.0, colour_term=0.12,
    exptime=60.0, gain=1.6, rdnoise=7.0, sky_adu=300.0, sky_gradient=0.2,
    fwhm_px=3.2, fwhm_gradient=0.08, beta=3.5, saturate=60000.0, mag_range=(13.0, 22.0),
    colour_range=(0.2, 2.8), n_hot_pixels=30, n_cosmic_rays=15, proper_motion_mas=8.0,
    real_bright_stars=False, header_wcs="true", wcs_offset_arcsec=0.0, wcs_rotation_deg=0.0,
    date_obs="2026-03-14T21:05:00", stamp_fwhm=7.0, subsample=3, noise_seed=None, extra_sources=(),
    n_trails=0, trail_adu_per_px=400.0, catalogue=None,
):
    """Render one frame; see the module docstring.  ``header_wcs`` is 'true'
    (exact, with SIP), 'perturbed' (offset/rotated, no SIP) or 'none'.
    ``seed`` draws the sky (stars, WCS truth); ``noise_seed``, when given,
    draws the noise and defects, so several exposures of one sky differ.
    ``extra_sources``: (x, y, mag[, bp_rp]) point sources that are not in
    the Gaia catalogue (a minor planet, a transient), of catalogue magnitude
    ``mag`` at BP-RP ``bp_rp`` (default 0); their positions are in
    ``SimulatedFrame.extras``.  ``catalogue``: a Gaia-schema sky
    (``sky_catalogue``) whose stars on the frame are rendered, instead of
    stars drawn on the frame: frames of different geometry then share one
    sky and one reference catalogue.  ``n_trails`` satellite trails cross
    the frame, each ``trail_adu_per_px`` ADU per pixel of length, with the
    PSF's profile across (``SimulatedFrame.trails``)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    band_obj = canonical_band(band)
    wcs = make_wcs(shape, ra, dec, pixscale, rotation_deg, sip=True, flip=flip)
    obs_epoch = Time(date_obs, scale="utc").jyear
    if catalogue is None:
        stars = _synthetic_stars(rng, n_stars, shape, 3, mag_range, colour_range)
        # distinct synthetic Gaia-like identifiers (offset keeps them apart from real ones)
        source_id = 7 * 10**18 + rng.permutation(50 * n_stars)[:n_stars].astype(np.int64) * 997
        if real_bright_stars:
            stars, source_id = _add_real_stars(stars, source_id, wcs, shape, rng, colour_range)
        ra_obs, dec_obs = wcs.all_pix2world(stars["x"], stars["y"], 0)
        pmra = rng.normal(0.0, proper_motion_mas, stars["x"].size)
        pmdec = rng.normal(0.0, proper_motion_mas, stars["x"].size)
        cat_ra, cat_dec = propagate(ra_obs, dec_obs, pmra, pmdec, 2016.0 - obs_epoch)
    else:
        stars, source_id, pmra, pmdec, cat_ra, cat_dec, ra_obs, dec_obs = _stars_of(catalogue, wcs, shape,
                                                                                      obs_epoch)
    g = stars["g"]
    bp = g + 0.45 * stars["colour"]
    rp = g - 0.55 * stars["colour"]
    catalogue = Table(dict(
        source_id=source_id, ra=cat_ra, dec=cat_dec, pmra=pmra, pmdec=pmdec,
        ref_epoch=np.full(g.size, 2016.0), phot_g_mean_mag=g, phot_bp_mean_mag=bp, phot_rp_mean_mag=rp))
    ref_mag = np.asarray(catalogue[GAIA_MAG_COLUMN[band_obj.gaia_band]])
    m_inst = ref_mag - zero_point - colour_term * stars["colour"]
    flux = 10 ** (-0.4 * m_inst) * exptime

    params = dict(zero_point=zero_point, colour_term=colour_term, fwhm_px=fwhm_px,
                  fwhm_gradient=fwhm_gradient, beta=beta, sky_adu=sky_adu, sky_gradient=sky_gradient,
                  gain=gain, rdnoise=rdnoise, exptime=exptime, saturate=saturate,
                  pixscale_arcsec=pixscale, band=band_obj.name, seed=seed)
    frame = SimulatedFrame(image=np.zeros(shape, np.float32), header=fits.Header(), truth=None,
                           catalogue=catalogue, extras=_extras(extra_sources, wcs, zero_point, colour_term, exptime),
                           true_wcs=wcs, params=params)

    yy, xx = np.mgrid[0:h, 0:w]
    sky = frame.sky_at(xx, yy).astype(np.float64)
    del xx, yy
    stars_adu = _render_stars(frame, np.concatenate([stars["x"], frame.extras["x"]]),
                              np.concatenate([stars["y"], frame.extras["y"]]),
                              np.concatenate([flux, frame.extras["flux_adu"]]), stamp_fwhm, subsample)
    frame.trails = _trails(np.random.default_rng([seed, 7]), n_trails, shape, trail_adu_per_px)
    stars_adu += _render_trails(frame)
    noise = rng if noise_seed is None else np.random.default_rng(noise_seed)
    electrons = noise.poisson(np.clip((sky + stars_adu) * gain, 0, None)).astype(np.float64)
    electrons += noise.normal(0.0, rdnoise, shape)
    image = electrons / gain
    frame.defects = _add_defects(image, noise, n_hot_pixels, n_cosmic_rays, saturate)
    image = np.clip(np.round(image), 0, saturate).astype(np.float32)
    frame.image = image

    truth = catalogue.copy()
    truth["x"], truth["y"] = stars["x"], stars["y"]
    truth["ra_obs"], truth["dec_obs"] = ra_obs, dec_obs
    truth["bp_rp"] = stars["colour"]
    truth["ref_mag"] = ref_mag
    truth["flux_adu"] = flux
    truth["m_inst"] = m_inst
    truth["fwhm_px"] = frame.fwhm_at(stars["x"], stars["y"])
    alpha = frame.moffat_alpha(truth["fwhm_px"])
    peak = flux * (beta - 1) / (np.pi * alpha ** 2) + sky_adu
    truth["saturated"] = peak >= 0.9 * saturate
    frame.truth = truth
    frame.header = _make_header(frame, wcs, header_wcs, wcs_offset_arcsec, wcs_rotation_deg,
                                date_obs, band_obj.name)
    return frame


def _extras(extra_sources, wcs, zero_point, colour_term, exptime):
    """Table of the non-catalogue sources: x, y (0-based), ra, dec, mag, bp_rp, flux_adu."""
    rows = [tuple(source) + (0.0,) * (4 - len(source)) for source in extra_sources]
    x, y, mag, bp_rp = (np.array(v, dtype=float) for v in zip(*rows)) if rows else (np.array([]),) * 4
    ra, dec = wcs.all_pix2world(x, y, 0) if len(x) else (np.array([]), np.array([]))
    return Table(dict(x=x, y=y, ra=ra, dec=dec, mag=mag, bp_rp=bp_rp,
                      flux_adu=10 ** (-0.4 * (mag - zero_point - colour_term * bp_rp)) * exptime))


def sky_catalogue(ra, dec, radius_deg, n_stars, seed, mag_range=(13.0, 22.0), colour_range=(0.2, 2.8),
                  proper_motion_mas=8.0):
    """A Gaia-schema sky of ``n_stars`` stars (epoch 2016.0) spread
    uniformly over a square of side 2 ``radius_deg`` centred on (ra, dec),
    magnitudes drawn as ``simulate_frame`` draws them; render it on frames
    with ``simulate_frame(catalogue=...)``."""
    rng = np.random.default_rng(seed)
    side = 2 * radius_deg
    stars = _synthetic_stars(rng, n_stars, (1000, 1000), 0, mag_range, colour_range)
    offset_ra = (stars["x"] / 999.0 - 0.5) * side / np.cos(np.radians(dec))
    offset_dec = (stars["y"] / 999.0 - 0.5) * side
    g, colour = stars["g"], stars["colour"]
    return Table(dict(
        source_id=7 * 10**18 + 3 + rng.permutation(50 * n_stars)[:n_stars].astype(np.int64) * 997,
        ra=ra + offset_ra, dec=dec + offset_dec,
        pmra=rng.normal(0.0, proper_motion_mas, n_stars), pmdec=rng.normal(0.0, proper_motion_mas, n_stars),
        ref_epoch=np.full(n_stars, 2016.0), phot_g_mean_mag=g, phot_bp_mean_mag=g + 0.45 * colour,
        phot_rp_mean_mag=g - 0.55 * colour))


def _stars_of(catalogue, wcs, shape, obs_epoch):
    """The catalogue's stars on a frame of ``shape`` through ``wcs`` at
    ``obs_epoch``: (stars dict x, y, g, colour; source_id, pmra, pmdec,
    catalogue ra, dec; ra, dec at the epoch)."""
    pmra, pmdec = np.asarray(catalogue["pmra"], float), np.asarray(catalogue["pmdec"], float)
    ra_obs, dec_obs = propagate(np.asarray(catalogue["ra"], float), np.asarray(catalogue["dec"], float),
                                pmra, pmdec, obs_epoch - 2016.0)
    x, y = wcs.all_world2pix(ra_obs, dec_obs, 0)
    on = _on_frame(x, y, shape)
    colour = np.asarray(catalogue["phot_bp_mean_mag"] - catalogue["phot_rp_mean_mag"], float)
    stars = dict(x=x[on], y=y[on], g=np.asarray(catalogue["phot_g_mean_mag"], float)[on], colour=colour[on])
    return (stars, np.asarray(catalogue["source_id"])[on], pmra[on], pmdec[on],
            np.asarray(catalogue["ra"], float)[on], np.asarray(catalogue["dec"], float)[on], ra_obs[on], dec_obs[on])


def _on_frame(x, y, shape, border=3):
    """Positions at least ``border`` pixels inside a frame of ``shape``."""
    h, w = shape
    return (x > border) & (x < w - 1 - border) & (y > border) & (y < h - 1 - border)


def _add_real_stars(stars, source_id, wcs, shape, rng, colour_range):
    """Add the real Gaia DR3 stars (G <= 10) that fall on the frame."""
    h, w = shape
    ra0, dec0 = wcs.wcs.crval
    radius = 0.75 * np.hypot(h, w) * np.abs(wcs.pixel_scale_matrix).max()
    real = read_gaia_package(ra0, dec0, radius, 10.5)
    x, y = wcs.all_world2pix(real["ra"], real["dec"], 0)
    inside = _on_frame(x, y, shape)
    n = int(inside.sum())
    merged = dict(x=np.concatenate([stars["x"], x[inside]]),
                  y=np.concatenate([stars["y"], y[inside]]),
                  g=np.concatenate([stars["g"], np.asarray(real["phot_g_mean_mag"])[inside]]),
                  colour=np.concatenate([stars["colour"], rng.uniform(*colour_range, n)]))
    return merged, np.concatenate([source_id, np.asarray(real["source_id"])[inside]])


def _render_stars(frame, x, y, flux, stamp_fwhm, subsample):
    """Sum of Moffat stars, each integrated over pixels by ``subsample``² points
    and normalised to its total flux on its stamp."""
    h, w = frame.image.shape
    beta = frame.params["beta"]
    fwhm = frame.fwhm_at(x, y)
    half = int(np.ceil(stamp_fwhm * frame.params["fwhm_px"] * (1 + frame.params["fwhm_gradient"])))
    offs = np.arange(-half, half + 1)
    sub = (np.arange(subsample) + 0.5) / subsample - 0.5
    out = np.zeros(h * w, np.float64)
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    for start in range(0, x.size, 2000):      # bounded memory: 2000 stamps at a time
        sl = slice(start, start + 2000)
        dx = (ix[sl, None] - x[sl, None] + offs[None, :])[:, :, None] + sub[None, None, :]
        dy = (iy[sl, None] - y[sl, None] + offs[None, :])[:, :, None] + sub[None, None, :]
        alpha2 = frame.moffat_alpha(fwhm[sl])[:, None, None, None, None] ** 2
        r2 = dy[:, :, None, :, None] ** 2 + dx[:, None, :, None, :] ** 2
        prof = (1.0 + r2 / alpha2) ** (-beta)
        stamp = prof.mean(axis=(3, 4))
        stamp *= (flux[sl] / stamp.sum(axis=(1, 2)))[:, None, None]
        px = ix[sl, None, None] + offs[None, None, :]
        py = iy[sl, None, None] + offs[None, :, None]
        px, py = np.broadcast_to(px, stamp.shape), np.broadcast_to(py, stamp.shape)
        ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        out += np.bincount((py[ok] * w + px[ok]), weights=stamp[ok], minlength=h * w)
    return out.reshape(h, w)


def _add_defects(image, rng, n_hot, n_cosmic, saturate):
    """Hot pixels (one pixel, 0.3-1 of saturation) and cosmic rays (straight
    tracks of 1-5 pixels, 2000-20000 ADU each); returns their table (the
    brightest pixel's position)."""
    h, w = image.shape
    level = rng.uniform(0.3, 1.0, n_hot) * saturate
    hot_y, hot_x = rng.integers(0, h, n_hot), rng.integers(0, w, n_hot)
    image[hot_y, hot_x] = level
    xs, ys = [], []
    for _ in range(n_cosmic):
        y0, x0 = rng.integers(5, h - 5), rng.integers(5, w - 5)
        length = rng.integers(1, 6)
        angle = rng.uniform(0, np.pi)
        t = np.arange(length)
        ty, tx = (y0 + np.round(t * np.sin(angle))).astype(int), (x0 + np.round(t * np.cos(angle))).astype(int)
        deposit = rng.uniform(2000, 20000)
        image[ty, tx] += deposit
        brightest = np.argmax(image[ty, tx])
        xs.append(tx[brightest])
        ys.append(ty[brightest])
    return Table(dict(x=np.concatenate([hot_x, xs]).astype(float), y=np.concatenate([hot_y, ys]).astype(float),
                      kind=np.array(["hot pixel"] * n_hot + ["cosmic ray"] * n_cosmic, dtype="U10")))


def _trails(rng, n, shape, adu_per_px):
    """Random straight trails through the inner half of the frame."""
    h, w = shape
    return Table(dict(x0=rng.uniform(0.25, 0.75, n) * w, y0=rng.uniform(0.25, 0.75, n) * h,
                      angle_deg=rng.uniform(0.0, 180.0, n), adu_per_px=np.full(n, adu_per_px)))


def _render_trails(frame):
    """The trails' light (ADU): across each line the profile of a Moffat
    star integrated along it, (1 + d^2/alpha^2)^(1/2 - beta), normalised to
    ``adu_per_px`` per pixel of length."""
    from scipy.special import beta as beta_function
    h, w = frame.image.shape
    out = np.zeros((h, w))
    if not len(frame.trails):
        return out
    beta = frame.params["beta"]
    alpha = frame.moffat_alpha(frame.params["fwhm_px"])
    norm = alpha * beta_function(0.5, beta - 1.0)        # integral of the profile over d
    yy, xx = np.mgrid[0:h, 0:w]
    for trail in frame.trails:
        angle = np.radians(trail["angle_deg"])
        d = (xx - trail["x0"]) * np.sin(angle) - (yy - trail["y0"]) * np.cos(angle)
        out += trail["adu_per_px"] * (1.0 + (d / alpha) ** 2) ** (0.5 - beta) / norm
    return out


def _make_header(frame, wcs, header_wcs, offset, rotation, date_obs, band):
    p = frame.params
    header = fits.Header()
    if header_wcs == "true":
        header.update(wcs.to_header(relax=True))
    elif header_wcs == "perturbed":
        header.update(perturb_wcs(wcs, offset, rotation).to_header(relax=True))
    elif header_wcs != "none":
        raise ValueError(f"header_wcs must be 'true', 'perturbed' or 'none', not {header_wcs!r}")
    ra0, dec0 = wcs.wcs.crval
    header.update({
        "DATE-OBS": (date_obs, "start of exposure (UTC)"),
        "EXPTIME": (p["exptime"], "[s]"), "FILTER": band,
        "GAIN": (p["gain"], "[e-/ADU]"), "RDNOISE": (p["rdnoise"], "[e-]"),
        "SATURATE": (p["saturate"], "[ADU]"),
        "TELESCOP": "RAPAS-SIM 0.4m", "INSTRUME": "SimCam", "OBSERVER": "RAPAS simulator",
        "OBJECT": "SIM-FIELD", "RA": (ra0, "[deg] pointing"), "DEC": (dec0, "[deg] pointing"),
        "SITELAT": (43.75, "[deg]"), "SITELONG": (6.92, "[deg] east"), "SITEELEV": (1270.0, "[m]"),
    })
    return header


def main(argv=None):
    """Write the archive's demo frame and its reference catalogue (reproducible)."""
    import argparse
    from pathlib import Path
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", required=True, help="directory for demo.fits and demo_refcat.fits")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sim = simulate_frame(shape=(768, 768), n_stars=600, seed=2026, ra=150.1, dec=2.2, pixscale=1.2,
                         header_wcs="perturbed", wcs_offset_arcsec=4.0, wcs_rotation_deg=0.15,
                         date_obs="2026-11-24T22:10:00")
    sim.header["OBJECT"] = "COSMOS-DEMO"
    sim.header["OBSERVER"] = "RAPAS demo"
    sim.write(out / "demo.fits")
    sim.catalogue.write(out / "demo_refcat.fits", overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Write the products: calibrated FITS, source catalogue (VOTable, FITS), plots."""
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits

from . import __version__
from .detect import FLAG_DESCRIPTIONS

#: name -> (unit, UCD, description); the archive's sources table uses the same.
SOURCE_COLUMNS = {
    "source_num": (None, "meta.id;meta.number", "Running number of the source in this image"),
    "x_image": (u.pix, "pos.cartesian.x;instr.det", "Windowed centroid x (FITS convention, first pixel is 1)"),
    "y_image": (u.pix, "pos.cartesian.y;instr.det", "Windowed centroid y (FITS convention, first pixel is 1)"),
    "ra": (u.deg, "pos.eq.ra;meta.main", "Right ascension (ICRS) from the refined WCS at the observation epoch"),
    "dec": (u.deg, "pos.eq.dec;meta.main", "Declination (ICRS) from the refined WCS at the observation epoch"),
    "mag_ap1": (u.mag, "phot.mag", "Calibrated magnitude in aperture 1 (radius in the image's metadata; not corrected to total)"),
    "mag_ap1_err": (u.mag, "stat.error;phot.mag", "Photometric error of mag_ap1"),
    "mag_ap2": (u.mag, "phot.mag", "Calibrated magnitude in aperture 2 (not corrected to total)"),
    "mag_ap2_err": (u.mag, "stat.error;phot.mag", "Photometric error of mag_ap2"),
    "mag_ap3": (u.mag, "phot.mag", "Calibrated magnitude in aperture 3 (not corrected to total)"),
    "mag_ap3_err": (u.mag, "stat.error;phot.mag", "Photometric error of mag_ap3"),
    "mag_ap4": (u.mag, "phot.mag", "Calibrated magnitude in aperture 4 (not corrected to total)"),
    "mag_ap4_err": (u.mag, "stat.error;phot.mag", "Photometric error of mag_ap4"),
    "mag_psf": (u.mag, "phot.mag", "Calibrated PSF magnitude, aperture-corrected to total flux"),
    "mag_psf_err": (u.mag, "stat.error;phot.mag", "Error of mag_psf including the zero-point error"),
    "mag_inst": (u.mag, "phot.mag;instr", "Instrumental magnitude -2.5 log10(ADU/s), calibration aperture corrected to total"),
    "mag_inst_err": (u.mag, "stat.error;phot.mag;instr", "Photometric error of mag_inst (photons, sky, read noise)"),
    "mag_cal": (u.mag, "phot.mag;em.opt", "Calibrated total magnitude in the image's band (zero point and colour term applied; sources without Gaia colour use the calibrators' median BP-RP)"),
    "mag_cal_err": (u.mag, "stat.error;phot.mag", "Error of mag_cal including the zero-point error"),
    "snr": (None, "stat.snr", "Signal-to-noise ratio in the calibration aperture"),
    "fwhm": (u.arcsec, "phys.angSize;src", "Full width at half maximum of the source"),
    "ellipticity": (None, "src.ellipticity", "1 - b/a from second moments"),
    "flags": (None, "meta.code.qual", "Bit flags: " + "; ".join(f"{k} {v}" for k, v in FLAG_DESCRIPTIONS.items())),
    "gaia_source_id": (None, "meta.id.cross", "Gaia DR3 source_id of the nearest match (0 if none)"),
    "gaia_sep": (u.arcsec, "pos.angDistance", "Distance to the matched Gaia star"),
    "gaia_bp_rp": (u.mag, "phot.color;em.opt.B;em.opt.R", "Gaia BP-RP colour of the matched star"),
    "simbad_id": (None, "meta.id.cross", "SIMBAD main identifier of the one-to-one match (empty if none)"),
    "simbad_otype": (None, "src.class", "SIMBAD object type of the match"),
    "vsx_name": (None, "meta.id.cross", "AAVSO VSX name of the matched variable star"),
    "vsx_type": (None, "src.class;src.var", "VSX variability type"),
    "vsx_period": (u.day, "time.period;src.var", "VSX period"),
    "milliquas_name": (None, "meta.id.cross", "Milliquas name of the matched quasar or AGN"),
    "milliquas_type": (None, "src.class", "Milliquas classification (Q, A, B, K, N, ...)"),
    "milliquas_z": (None, "src.redshift", "Milliquas redshift"),
    "skybot_name": (None, "meta.id.cross", "Known solar-system body at this position and epoch (SkyBoT)"),
    "skybot_class": (None, "src.class", "SkyBoT dynamical class of the body"),
    "colibri_name": (None, "meta.id.cross", "Astro-COLIBRI transient or alert at this position"),
}


def write_all(directory, frame, wcs, summary, sources, cal, data_sub, log):
    """FITS and catalogue here, plots meanwhile in a forked child (the two
    take about the same time on a 4096x4096 frame; a fork shares the arrays
    without copying them)."""
    import multiprocessing
    from . import plots
    plotter = multiprocessing.get_context("fork").Process(
        target=plots.write_plots, args=(directory, data_sub, frame.data, sources, cal, summary))
    plotter.start()
    try:
        write_calibrated_fits(directory / "calibrated.fits", frame, wcs, summary)
        write_catalogue(directory, sources, summary)
    finally:
        plotter.join()
    if plotter.exitcode != 0:
        raise RuntimeError(f"the plotting process failed (exit code {plotter.exitcode})")
    log("products written")


def write_calibrated_fits(path, frame, wcs, summary):
    """Original pixels (masked pixels as NaN), refined WCS, provenance and calibration keywords."""
    from stdpipe.astrometry import clear_wcs
    header = frame.header.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = clear_wcs(header, remove_comments=True, remove_underscored=True, remove_history=False)
        header.update(wcs.to_header(relax=True))
    for key in ("BZERO", "BSCALE", "BLANK"):
        header.remove(key, ignore_missing=True, remove_all=True)
    cards = [
        ("FILTER", summary["filter"], "RAPAS canonical band"),
        ("MJD-MID", summary["mjd_mid"], "[d] mid-exposure MJD (UTC)"),
        ("RP_VERS", __version__, "RAPAS pipeline version"),
        ("RP_SRC", summary["source_file"], "submitted file name"),
        ("RP_SHA", summary["checksum_sha256"][:64], "sha256 of the submitted file"),
        ("RP_WCS", summary["wcs_source"], "WCS origin: header, refined or solved"),
        ("RP_ASTRM", _finite(summary["astrometric_rms_arcsec"]), "[arcsec] astrometric RMS"),
        ("RP_ZP", summary["zero_point"], "[mag] zero point, mag = ZP - 2.5 log10(ADU/s)"),
        ("RP_ZPERR", summary["zero_point_err"], "[mag] zero point error"),
        ("RP_CTERM", summary["colour_term"], "colour term in Gaia BP-RP"),
        ("RP_CALBD", summary["calibration_band"], "reference band"),
        ("RP_NCAL", summary["n_calibrators"], "number of calibrators"),
        ("RP_FWHM", summary["fwhm_arcsec"], "[arcsec] PSF FWHM"),
        ("RP_LIM5", _finite(summary["limiting_mag_5sigma"]), "[mag] 5-sigma limiting magnitude"),
        ("RP_APCOR", summary["aperture_correction"], "[mag] aperture correction to total"),
    ]
    data = frame.data.copy()
    data[frame.mask] = np.nan
    with warnings.catch_warnings():      # long values shorten their comments: fine
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for key, value, comment in cards:
            header[key] = (value, comment)
        fits.PrimaryHDU(data, header).writeto(path, overwrite=True, checksum=True)


def _finite(value):
    return float(value) if value is not None and np.isfinite(value) else -1.0


def write_catalogue(directory, sources, summary):
    table = sources.copy()
    for name, (unit, ucd, description) in SOURCE_COLUMNS.items():
        if name not in table.colnames:
            continue
        if unit is not None:
            table[name].unit = unit
        table[name].description = description
        table[name].meta["ucd"] = ucd
    description = (f"RAPAS sources of {summary['source_file']} ({summary['filter']},"
                   f" MJD {summary['mjd_mid']:.5f})")
    table.meta = {"EXTNAME": "SOURCES", "FILTER": summary["filter"], "MJD-MID": summary["mjd_mid"],
                  "RP_ZP": summary["zero_point"]}
    table.write(directory / "sources.fits", overwrite=True)
    table.meta = {"description": description}
    from astropy.io.votable import from_table
    vot = from_table(table)
    resource_table = vot.get_first_table()
    for field in resource_table.fields:
        if field.name in SOURCE_COLUMNS:
            field.ucd = SOURCE_COLUMNS[field.name][1]
    vot.to_xml(str(directory / "sources.vot"), tabledata_format="binary2")

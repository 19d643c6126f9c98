"""Write the products: calibrated FITS, source catalogue (VOTable, FITS), plots."""
import warnings

import numpy as np
from astropy.io import fits

from . import __version__
from .contract import SOURCE_COLUMNS


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
        ("FILTER", summary.filter, "RAPAS canonical band"),
        ("MJD-MID", summary.mjd_mid, "[d] mid-exposure MJD (UTC)"),
        ("RP_VERS", __version__, "RAPAS pipeline version"),
        ("RP_SRC", summary.source_file, "submitted file name"),
        ("RP_SHA", summary.checksum_sha256[:64], "sha256 of the submitted file"),
        ("RP_WCS", summary.wcs_source, "WCS origin: header, refined or solved"),
        ("RP_ASTRM", _finite(summary.astrometric_rms_arcsec), "[arcsec] astrometric RMS"),
        ("RP_FWHM", summary.fwhm_arcsec, "[arcsec] PSF FWHM"),
        ("RP_APCOR", summary.aperture_correction, "[mag] aperture correction to total"),
        ("RP_CALIB", summary.calib_level, "2: photometrically calibrated, 1: WCS only"),
    ]
    if summary.calib_level == 2:
        cards += [
            ("RP_ZP", summary.zero_point, "[mag] zero point, mag = ZP - 2.5 log10(ADU/s)"),
            ("RP_ZPERR", summary.zero_point_err, "[mag] zero point error"),
            ("RP_CTERM", summary.colour_term, "colour term in Gaia BP-RP"),
            ("RP_CALBD", summary.calibration_band, "reference band"),
            ("RP_NCAL", summary.n_calibrators, "number of calibrators"),
            ("RP_LIM5", _finite(summary.limiting_mag_5sigma), "[mag] 5-sigma limiting magnitude"),
        ]
    else:
        cards.append(("RP_CALER", summary.calibration_error[:68], "why there is no zero point"))
    data = frame.data.copy()
    data[frame.mask] = np.nan
    with warnings.catch_warnings():      # long values shorten their comments: fine
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for key, value, comment in cards:
            header[key] = (value, comment)
        fits.PrimaryHDU(data, header).writeto(path, overwrite=True, checksum=True)


def _finite(value, missing=-1.0):
    """FITS headers hold no NaN: ``missing`` stands for an unmeasured value."""
    return float(value) if value is not None and np.isfinite(value) else missing


def write_catalogue(directory, sources, summary):
    """sources.fits and sources.vot, each column with the contract's unit,
    UCD and description."""
    table = sources.copy()
    columns = {c.name: c for c in SOURCE_COLUMNS}
    for name in table.colnames:
        column = columns[name]
        if column.unit:
            table[name].unit = column.unit
        table[name].description = column.description
        table[name].meta["ucd"] = column.ucd
    description = (f"RAPAS sources of {summary.source_file} ({summary.filter},"
                   f" MJD {summary.mjd_mid:.5f})")
    table.meta = {"EXTNAME": "SOURCES", "FILTER": summary.filter, "MJD-MID": summary.mjd_mid,
                  "RP_ZP": _finite(summary.zero_point, -99.0)}
    table.write(directory / "sources.fits", overwrite=True)
    table.meta = {"description": description}
    from astropy.io.votable import from_table
    vot = from_table(table)
    resource_table = vot.get_first_table()
    for field in resource_table.fields:
        field.ucd = columns[field.name].ucd
    vot.to_xml(str(directory / "sources.vot"), tabledata_format="binary2")

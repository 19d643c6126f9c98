"""Write the products: calibrated FITS, source catalogue (VOTable, FITS), plots."""
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from . import __version__, display, preload
from .contract import SOURCE_COLUMNS


def write_all(directory, frame, wcs, summary, sources, cal, data_sub, log):
    """The plots of the sources in a forked child (a fork shares the arrays
    without copying them); meanwhile the FITS, the catalogue and the
    preview here (the two halves take about the same time on a 4096x4096
    frame)."""
    import multiprocessing
    preload.wait()
    plotter = multiprocessing.get_context("fork").Process(
        target=_write_source_plots, args=(directory, data_sub, frame.data.shape, sources, cal, summary))
    plotter.start()
    try:
        write_calibrated_fits(directory / "calibrated.fits", frame, wcs, summary)
        write_catalogue(directory, sources, summary)
        display.write_preview(directory / "preview.png", frame.data)
    finally:
        plotter.join()
    if plotter.exitcode != 0:
        failure = directory / PLOT_ERROR
        if failure.exists():
            log(failure.read_text().rstrip())
            failure.unlink()
        raise RuntimeError(f"the plotting process failed (exit code {plotter.exitcode})")
    log("products written")


#: where the plotting child leaves its traceback for the parent's log
PLOT_ERROR = ".plot-error"


def _write_source_plots(directory, *args):
    """``plots.write_source_plots`` in the child (the parent has imported
    pyplot ahead, ``preload``).  A failure's traceback goes to a file
    for the parent to log (the child's stderr is the command's, which says
    one line)."""
    import os
    import traceback
    try:
        from . import plots
        plots.write_source_plots(directory, *args)
    except BaseException:
        try:
            (directory / PLOT_ERROR).write_text(traceback.format_exc())
        except OSError:
            pass
        os._exit(1)


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
    write_votable(directory / "sources.vot", table, {name: c.ucd for name, c in columns.items()})


#: VOTable datatype -> big-endian numpy type of one element in a binary stream
_BINARY_TYPES = {"boolean": "S1", "unsignedByte": "u1", "short": ">i2", "int": ">i4", "long": ">i8",
                 "float": ">f4", "double": ">f8", "char": "S", "unicodeChar": ">u2"}


_STREAM = '<STREAM encoding="base64">'


def write_votable(path, table, ucds):
    """``table`` as a BINARY2 VOTable: the metadata (fields, units, UCDs,
    descriptions) from astropy's writer, the rows serialised at once.
    astropy writes a binary stream value by value in Python (1.5 s for
    5500 rows of 37 columns); every field here has a fixed size, so the
    stream is one big-endian record array: per row the null bits (one per
    field, first field in the high bit) and then the values."""
    import base64
    import io

    from astropy.io.votable import from_table
    vot = from_table(table[:1])
    fields = vot.get_first_table().fields
    for field in fields:
        field.ucd = ucds[field.name]
    buffer = io.BytesIO()
    vot.to_xml(buffer, tabledata_format="binary2")
    text = buffer.getvalue().decode("utf-8")
    if len(table):                      # an empty table has no DATA element
        head, rest = text.split(_STREAM, 1)
        stream = base64.encodebytes(_binary2_rows(table, fields)).decode("ascii")
        text = head + _STREAM + "\n" + stream + rest[rest.index("</STREAM>"):]
    Path(path).write_text(text, encoding="utf-8")


def _binary2_rows(table, fields):
    """The BINARY2 serialisation of ``table``'s rows (fixed-size fields only)."""
    n_mask = (len(fields) + 7) // 8
    dtype = [("_nulls", "u1", (n_mask,))]
    for field in fields:
        element = _BINARY_TYPES[field.datatype]
        size = 1 if field.arraysize is None else int(field.arraysize)
        dtype.append((field.name, element + str(size)) if element == "S" else
                     (field.name, element, (size,)) if field.datatype == "unicodeChar" else (field.name, element))
    rows = np.zeros(len(table), dtype=dtype)
    nulls = np.zeros((len(table), n_mask * 8), dtype=bool)
    for k, field in enumerate(fields):
        column = table[field.name]
        nulls[:, k] = np.ma.getmaskarray(column)
        values = np.ma.getdata(column)
        if field.datatype == "unicodeChar":
            codes = np.asarray(values).astype(str)
            rows[field.name] = codes.view(np.uint32).reshape(len(table), -1)[:, :rows[field.name].shape[1]]
        elif field.datatype == "boolean":
            rows[field.name] = np.where(values, b"T", b"F")
        else:
            rows[field.name] = values
    rows["_nulls"] = np.packbits(nulls, axis=1)
    return rows.tobytes()

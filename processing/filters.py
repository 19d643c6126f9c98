"""Photometric bands known to RAPAS: the one place for names and wavelengths.

Each band has a canonical name, the Gaia band it is calibrated against
(the colour term in BP-RP absorbs the difference), and an approximate
wavelength range (metres) used for the ObsCore ``em_min``/``em_max`` and for
SIAP2 BAND queries.  Ranges are the FWHM-ish limits of the passbands.
"""
from dataclasses import dataclass

from .errors import HeaderError


@dataclass(frozen=True)
class Band:
    name: str
    gaia_band: str      # 'G', 'BP' or 'RP'
    em_min: float       # metres
    em_max: float       # metres

    @property
    def em_mid(self):
        return 0.5 * (self.em_min + self.em_max)


BANDS = {b.name: b for b in [
    # Gaia-compatible RAPAS filters (Riello et al. 2021 passbands)
    Band("G", "G", 330e-9, 1050e-9),
    Band("BP", "BP", 330e-9, 680e-9),
    Band("RP", "RP", 630e-9, 1050e-9),
    # Johnson-Cousins
    Band("U", "BP", 320e-9, 400e-9),
    Band("B", "BP", 390e-9, 490e-9),
    Band("V", "G", 500e-9, 590e-9),
    Band("R", "RP", 570e-9, 720e-9),
    Band("I", "RP", 730e-9, 880e-9),
    # SDSS
    Band("u'", "BP", 300e-9, 400e-9),
    Band("g'", "BP", 400e-9, 550e-9),
    Band("r'", "G", 550e-9, 690e-9),
    Band("i'", "RP", 690e-9, 820e-9),
    Band("z'", "RP", 820e-9, 1000e-9),
    # Unfiltered (clear, luminance): calibrated against G
    Band("CLEAR", "G", 350e-9, 1000e-9),
    # Colour planes of a DSLR or one-shot-colour camera's Bayer mosaic (AAVSO's TB, TG, TR)
    Band("TB", "BP", 400e-9, 510e-9),
    Band("TG", "G", 480e-9, 600e-9),
    Band("TR", "RP", 570e-9, 680e-9),
]}

# Header spellings seen from amateur and professional cameras, upper-cased.
SYNONYMS = {
    "GAIA_G": "G", "GAIA-G": "G", "GG": "G", "G_GAIA": "G",
    "GBP": "BP", "GAIA_BP": "BP", "BLUE_PHOTOMETER": "BP",
    "GRP": "RP", "GAIA_RP": "RP", "RED_PHOTOMETER": "RP",
    "JOHNSON_B": "B", "JOHNSON-B": "B", "BJ": "B",
    "JOHNSON_V": "V", "JOHNSON-V": "V", "VJ": "V",
    "COUSINS_R": "R", "COUSINS-R": "R", "RC": "R", "R_C": "R",
    "COUSINS_I": "I", "COUSINS-I": "I", "IC": "I", "I_C": "I",
    "SDSS_U": "u'", "SDSS-U": "u'", "U'": "u'", "SU": "u'",
    "SDSS_G": "g'", "SDSS-G": "g'", "G'": "g'", "SG": "g'",
    "SDSS_R": "r'", "SDSS-R": "r'", "R'": "r'", "SR": "r'",
    "SDSS_I": "i'", "SDSS-I": "i'", "I'": "i'", "SI": "i'",
    "SDSS_Z": "z'", "SDSS-Z": "z'", "Z'": "z'", "SZ": "z'",
    "C": "CLEAR", "CL": "CLEAR", "CLR": "CLEAR", "L": "CLEAR", "LUM": "CLEAR",
    "LUMINANCE": "CLEAR", "NONE": "CLEAR", "OPEN": "CLEAR", "EMPTY": "CLEAR",
}


def canonical_band(value):
    """Return the ``Band`` for a header or user filter name.

    Raises ``HeaderError`` for a name that is neither a band nor a known
    synonym, so that a typo never silently becomes a wrong calibration.
    """
    raw = str(value).strip()
    if raw in BANDS:
        return BANDS[raw]
    key = raw.upper().replace(" ", "_")
    for name in BANDS:
        if key == name.upper():
            return BANDS[name]
    if key in SYNONYMS:
        return BANDS[SYNONYMS[key]]
    known = ", ".join(BANDS)
    raise HeaderError(f"unknown filter {raw!r}: use one of {known}"
                      " (or set the filter band option)")

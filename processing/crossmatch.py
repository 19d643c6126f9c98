"""Positional cross-matching: candidate pairs within a radius, then one-to-one.

Every match in the pipeline goes through here: the WCS refinement, the
calibrators, the Gaia identification of sources and the enrichment
catalogues.  One-to-one means mutual nearest: a pair is kept when the
object is the source's nearest candidate and the source the object's.
(stdpipe's ``spherical_match`` returns every pair within the radius, which
lets faint catalogue neighbours into a WCS fit.)
"""
import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord, angular_separation, search_around_sky


def separation_arcsec(ra1, dec1, ra2, dec2):
    """Distances (arcsec) between paired positions (deg)."""
    radians = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    return np.degrees(angular_separation(*radians)) * 3600.0


def pairs(ra1, dec1, ra2, dec2, radius_arcsec):
    """Every pair closer than ``radius_arcsec`` (a number, or one radius per
    position of the second list): (index1, index2, separation_arcsec)."""
    radius = np.asarray(radius_arcsec, dtype=float)
    if len(ra1) == 0 or len(ra2) == 0 or not np.any(radius > 0):
        empty = np.array([], dtype=int)
        return empty, empty, np.array([])
    c1 = SkyCoord(np.asarray(ra1, float) * u.deg, np.asarray(dec1, float) * u.deg)
    c2 = SkyCoord(np.asarray(ra2, float) * u.deg, np.asarray(dec2, float) * u.deg)
    i1, i2, sep, _ = search_around_sky(c1, c2, float(radius.max()) * u.arcsec)
    sep = sep.arcsec
    if radius.ndim:
        keep = sep <= radius[i2]
        i1, i2, sep = i1[keep], i2[keep], sep[keep]
    return i1, i2, sep


def one_to_one(index1, index2, distance):
    """Indices into candidate pairs that are mutual nearest neighbours: the
    closest partner of their first element and of their second (any
    hashable keys: a catalogue's names work as well as row numbers)."""
    order = np.argsort(distance, kind="stable")
    _, first_of_1 = np.unique(np.asarray(index1)[order], return_index=True)
    _, first_of_2 = np.unique(np.asarray(index2)[order], return_index=True)
    return order[np.intersect1d(first_of_1, first_of_2)]


def nearest_match(ra1, dec1, ra2, dec2, radius_arcsec):
    """One-to-one match within ``radius_arcsec``: (index1, index2, separation_arcsec)."""
    i1, i2, sep = pairs(ra1, dec1, ra2, dec2, radius_arcsec)
    keep = one_to_one(i1, i2, sep)
    keep = keep[np.argsort(i1[keep], kind="stable")]
    return i1[keep], i2[keep], sep[keep]

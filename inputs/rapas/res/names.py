"""Positions from what an observer types into a search form (DaCHS side).

``resolve`` reads coordinates, then the network's own names (its alert
targets, then the notable objects found in its frames: exact name, case
and spacing ignored), and only then asks SIMBAD through DaCHS's Sesame
client.  An archive that cannot reach Sesame still finds its own targets,
and says so in one line when a name needs SIMBAD.
"""
from gavo import base

#: the archive's own names, searched in this order: (table, name column)
LOCAL_NAMES = (("rapas.targets", "name"), ("rapas.notable", "name"))


def resolve(text, field_name):
    """(ra, dec) in degrees (ICRS) for ``text``; ``base.ValidationError``
    on ``field_name`` if it is neither a position nor a name found."""
    text = (text or "").strip()
    try:
        return base.parseCooPair(text)
    except ValueError:
        pass
    position = local_position(text)
    if position is not None:
        return position
    try:
        found = base.caches.getSesame("web").query(text)
    except base.ValidationError as exc:       # DaCHS's "Simbad is offline"
        raise base.ValidationError(
            f"{text!r} is not one of this archive's targets, and SIMBAD (Sesame) cannot be reached"
            " from the archive to look it up: give the position as RA, Dec in degrees"
            " (e.g. 150.1, 2.2) instead", field_name) from exc
    if not found:
        raise base.ValidationError(f"{text!r} is neither a position (RA, Dec) nor a name SIMBAD knows",
                                   field_name)
    return float(found["RA"]), float(found["dec"])


def local_position(name):
    """(ra, dec) of the archive's target or notable object called ``name``
    (case and runs of spaces ignored); None if there is none."""
    key = " ".join(name.split()).lower()
    with base.getTableConn() as conn:
        for table, column in LOCAL_NAMES:
            rows = list(conn.query(
                f"SELECT ra, dec FROM {table} WHERE lower(regexp_replace({column}, '\\s+', ' ', 'g')) = %(key)s"
                " LIMIT 1", {"key": key}))
            if rows:
                return float(rows[0][0]), float(rows[0][1])
    return None

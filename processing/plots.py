"""Diagnostic PNGs.  Images are block-averaged to at most 1024 px first
(``display.downsample``), so a 4096x4096 frame plots as fast as a small one."""
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .display import display_limits, downsample  # noqa: E402


def write_source_plots(directory, data_sub, shape, sources, cal, summary):
    """zeropoint.png, detections.png and fwhm_map.png (``display.write_preview`` writes the fourth plot)."""
    zeropoint(directory / "zeropoint.png", cal, summary)
    detections(directory / "detections.png", data_sub, sources, cal, summary)
    fwhm_map(directory / "fwhm_map.png", sources, summary, shape)


def zeropoint(path, cal, summary):
    if cal is None:
        fig, ax = plt.subplots(figsize=(11, 4.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "No photometric calibration:\n" + "\n".join(textwrap.wrap(summary.calibration_error, 90)),
                ha="center", va="center", fontsize=11)
        fig.suptitle(summary.source_file)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return
    idx = cal.used
    resid = cal.zero - cal.zero_model
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, xval, label in ((axes[0], cal.catalogue_mag, f"Gaia {cal.reference_band} (mag)"),
                            (axes[1], cal.colour, "Gaia BP-RP (mag)")):
        ax.errorbar(xval[~idx], resid[~idx], cal.zero_err[~idx], fmt=".", color="0.7", ms=3,
                    label="rejected")
        ax.errorbar(xval[idx], resid[idx], cal.zero_err[idx], fmt=".", color="C0", ms=3,
                    label=f"{int(idx.sum())} calibrators")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(label)
    axes[0].set_ylabel("catalogue - model (mag)")
    axes[0].set_ylim(-0.5, 0.5)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{summary.source_file}: ZP = {cal.zero_point:.4f} ± {cal.zero_point_err:.4f},"
                 f" colour term {cal.colour_term:.4f}, rms {cal.rms:.3f} mag")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def detections(path, data_sub, sources, cal, summary):
    small, f = downsample(data_sub)
    lo, hi = display_limits(small)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(small, origin="lower", cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
    x, y = (sources["x_image"] - 1) / f, (sources["y_image"] - 1) / f
    ax.scatter(x, y, s=12, facecolors="none", edgecolors="C1", lw=0.5, label=f"{len(sources)} detections")
    if cal is not None:
        oidx = cal.source_index[cal.used]
        ax.scatter(x[oidx], y[oidx], s=30, marker="s", facecolors="none", edgecolors="C0", lw=0.7,
                   label=f"{len(oidx)} calibrators")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{summary.source_file} ({summary.filter}), limit {summary.limiting_mag_5sigma:.2f} mag")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def fwhm_map(path, sources, summary, shape):
    good = (sources["flags"] == 0) & (sources["snr"] > 30)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, name, label in ((axes[0], "fwhm", "FWHM (arcsec)"), (axes[1], "ellipticity", "ellipticity")):
        values = np.asarray(sources[name][good])
        lo, hi = (np.percentile(values, [5, 95]) if values.size else (0, 1))
        sc = ax.scatter(sources["x_image"][good], sources["y_image"][good], c=values, s=10,
                        vmin=lo, vmax=hi, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=label)
        ax.set_xlim(0, shape[1])
        ax.set_ylim(0, shape[0])
        ax.set_aspect("equal")
        ax.set_xlabel("x (px)")
    axes[0].set_ylabel("y (px)")
    fig.suptitle(f"FWHM {summary.fwhm_arcsec:.2f} arcsec, ellipticity {summary.ellipticity:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


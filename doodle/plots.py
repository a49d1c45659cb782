"""Pictures for people: sample grids, galleries, curves and histograms as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def image_grid(
    images: np.ndarray, titles: list[str], path: str | Path, cols: int = 8, title: str | None = None
) -> Path:
    """Save ``images`` (n, S, S, C) uint8 as a labelled grid (white ink on black, as the model sees it)."""
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.4, rows * 1.55), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(t, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def histogram(groups: dict[str, np.ndarray], path: str | Path, xlabel: str, title: str) -> Path:
    """Overlaid histograms of values in [0, 1], one per group, over 25 equal bins."""
    bins = np.linspace(0, 1, 26)
    counts = {name: np.histogram(values, bins)[0] for name, values in groups.items()}
    return binned_histogram(counts, bins, path, xlabel, title, totals={k: len(v) for k, v in groups.items()})


def binned_histogram(
    counts: dict[str, np.ndarray],
    bins: np.ndarray,
    path: str | Path,
    xlabel: str,
    title: str,
    totals: dict[str, int] | None = None,
) -> Path:
    """The same picture as ``histogram`` from bin counts already made, so a caller that streams
    its values (doodle.analysis) never holds them. ``totals`` are the counts shown in the legend
    (default: the sum of the bins)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, c in counts.items():
        n = totals[name] if totals is not None else int(np.sum(c))
        # one weighted value per bin draws exactly the bars ax.hist would draw from the raw values
        ax.hist(bins[:-1], bins=bins, weights=c, alpha=0.6, label=f"{name} ({n})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

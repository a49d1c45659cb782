"""Pictures for people: sample grids, galleries, curves, histograms, embeddings and activation maps as PNGs."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

log = logging.getLogger(__name__)


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


GROUP_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def group_histograms(
    counts: dict[str, np.ndarray],
    bins: np.ndarray,
    path: str | Path,
    xlabel: str,
    title: str,
    totals: dict[str, int] | None = None,
) -> Path:
    """Save :func:`group_histograms_figure` to ``path``."""
    return _save(group_histograms_figure(counts, bins, xlabel, title, totals), path)


def group_histograms_figure(
    counts: dict[str, np.ndarray],
    bins: np.ndarray,
    xlabel: str,
    title: str,
    totals: dict[str, int] | None = None,
):
    """One panel per group of binned values, side by side on the same x axis, each bar the share
    (%) of its own group's values in that bin. A group of 75 wrong predictions is then as visible as
    one of 3,000 correct ones (in a shared count axis it is a few flat pixels). ``totals`` are each
    group's number of values (default: the sum of its bins); a group without any says so."""
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 3.5), squeeze=False, sharex=True)
    for i, (ax, (name, c)) in enumerate(zip(axes[0], counts.items())):
        c = np.asarray(c)
        n = totals[name] if totals is not None else int(np.sum(c))
        ax.set_title(f"{name}: {n:,}", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"% of {name}")
        ax.set_xlim(bins[0], bins[-1])
        if n == 0:
            ax.text(0.5, 0.5, f"no {name}", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.hist(bins[:-1], bins=bins, weights=100.0 * c / n, color=GROUP_COLOURS[i % len(GROUP_COLOURS)], alpha=0.8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


LEGEND_MAX_CLASSES = 20  # above this, class names are written at their centroids instead of a legend


def scatter_by_class(
    points: np.ndarray, labels: np.ndarray, predicted: np.ndarray, classes: list[str], path: str | Path, title: str
) -> Path:
    """2-D ``points`` coloured by true class; misclassified points (``predicted != labels``) as x.
    With few classes a legend names the colours; with many, each class's name is written at the
    median of its points (a legend of 340 entries would hide the plot)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    present = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo")
    colour = {c: cmap(c % cmap.N if cmap.N < 256 else c / max(len(classes) - 1, 1)) for c in present.tolist()}
    fig, ax = plt.subplots(figsize=(8, 7))
    wrong = predicted != labels
    for c in present.tolist():
        for miss, marker, size in ((False, "o", 12), (True, "x", 20)):
            sel = (labels == c) & (wrong == miss)
            if sel.any():
                ax.scatter(
                    points[sel, 0], points[sel, 1], s=size, marker=marker, color=colour[c], alpha=0.6, linewidths=1
                )
    if len(classes) <= LEGEND_MAX_CLASSES:
        handles = [
            Line2D([], [], marker="o", linestyle="", color=colour[c], label=classes[c]) for c in present.tolist()
        ] + [Line2D([], [], marker="x", linestyle="", color="0.3", label="misclassified")]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    else:
        for c in present.tolist():
            x, y = np.median(points[labels == c], axis=0)
            ax.text(x, y, classes[c], fontsize=6, ha="center", va="center", alpha=0.85)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def activation_grid(
    images: np.ndarray,
    captions: list[str],
    maps: list[np.ndarray],
    layer_names: list[str],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """For each of ``images`` (n, S, S, C) uint8: the image, then one row per layer of its channel
    maps (``maps[l]`` is (n, H, W, K)), each map scaled to its own range (viridis)."""
    n, channels = len(images), max(m.shape[-1] for m in maps)
    rows = n * len(maps)
    fig, axes = plt.subplots(rows, channels + 1, figsize=((channels + 1) * 1.1, rows * 1.15), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        first = axes[i * len(maps), 0]
        img = images[i]
        first.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        first.set_title(captions[i], fontsize=7)
        for j, (m, name) in enumerate(zip(maps, layer_names)):
            row = axes[i * len(maps) + j]
            row[1].set_title(name, fontsize=6, loc="left")
            for k in range(m.shape[-1]):
                row[k + 1].imshow(m[i, ..., k], cmap="viridis", interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


CURVE_NAMES = {"map_at_3": "MAP@3", "loss": "loss", "accuracy": "top-1 accuracy", "top3": "top-3 accuracy"}
TRAIN_STYLE, VAL_STYLE = "-", "--"


def learning_curves(
    histories: dict[str, dict[str, list[float]]], path: str | Path, keys: tuple[str, ...], title: str | None = None
) -> Path:
    """Save :func:`learning_curves_figure` to ``path``."""
    return _save(learning_curves_figure(histories, keys, title), path)


def learning_curves_figure(
    histories: dict[str, dict[str, list[float]]], keys: tuple[str, ...], title: str | None = None
):
    """One panel per metric of ``keys`` (the training names in a Keras history, e.g. ``map_at_3``,
    ``loss``): each run's training value (``key``, solid) and validation value (``val_<key>``,
    dashed) by epoch, both in the run's colour (an ensemble's members side by side), so the gap
    between the two lines shows over- or underfitting. A run without a key is left out of that
    panel. Each line's label is ``"<run> train"`` or ``"<run> validation"``."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.8), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(histories) <= 10 else "turbo")
    colours = {
        name: cmap(i % 10) if len(histories) <= 10 else cmap(i / max(len(histories) - 1, 1))
        for i, name in enumerate(histories)
    }
    for ax, key in zip(axes[0], keys):
        for name, history in histories.items():
            for split, hkey, style in (("train", key, TRAIN_STYLE), ("validation", f"val_{key}", VAL_STYLE)):
                values = history.get(hkey) or []
                if values:
                    ax.plot(
                        range(1, len(values) + 1),
                        values,
                        style,
                        marker="o",
                        markersize=3,
                        lw=1.2,
                        color=colours[name],
                        label=f"{name} {split}",
                    )
        ax.set_xlabel("epoch")
        ax.set_ylabel(CURVE_NAMES.get(key, key))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{CURVE_NAMES.get(key, key)}: train vs validation", fontsize=9)
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], linestyle=TRAIN_STYLE, color="0.3", label="train (mean over the epoch's batches)"),
        Line2D([], [], linestyle=VAL_STYLE, color="0.3", label="validation (after the epoch)"),
    ]
    if 1 < len(histories) <= 20:
        handles += [Line2D([], [], color=colours[name], lw=2, label=name) for name in histories]
    axes[0, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def message_figure(text: str, path: str | Path) -> Path:
    """A small picture holding one line of text: for a report that has nothing to show, so every
    declared output still exists and says why it is empty."""
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, transform=ax.transAxes)
    return _save(fig, path)


def guarded(view: str, path: Path, draw):
    """``draw()``, or, if it raises, one log line and a picture at ``path`` saying why: an optional
    picture never takes a stage down (its metrics are written before its pictures), and its
    declared output still exists. Returns what ``draw`` returned, None after an error."""
    try:
        return draw()
    except Exception as exc:  # any failure of a picture: the stage's numbers are already written
        log.warning("%s view skipped: %s: %s", view, type(exc).__name__, exc)
        message_figure(f"{view} not drawn: {type(exc).__name__}: {exc}"[:200], path)
        return None


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

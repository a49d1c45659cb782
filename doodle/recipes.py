"""Training recipes: named sets of params.yaml overrides, compared by ``python -m benchmarks.quality``.

This is the one place a recipe is defined. A recipe is a name, a one-line description naming its
source, and the params.yaml overrides it applies (nested like params.yaml). The overrides are the
recipe's method (model, input, optimizer, schedule, augmentation), never the data or the run length
(``data``, ``shard``, ``train.epochs``, ``train.steps_per_epoch``, ``train.time_budget_s``): those
belong to the run. Apply one to the project with the line that

    python -m benchmarks.quality --print-params NAME

prints, ``dvc exp run -S render.size=64 -S train.model=mobilenet ...`` (DVC writes the values into
params.yaml and runs the pipeline).
"""

from __future__ import annotations

import copy
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

#: Sections and keys a recipe may not set: they describe the data and the run, not the method.
RUN_KEYS = (
    "data",
    "sample",
    "shard",
    "train.epochs",
    "train.steps_per_epoch",
    "train.time_budget_s",
    "train.folds",  # an ensemble multiplies the training time: the run decides, not the recipe
    "train.seeds",
)

_NO_AUGMENT = {"shift": 0.0, "zoom": 0.0, "rotation": 0.0, "shear": 0.0, "flip": False}
_NO_STROKE_AUGMENT = {"scale": 0.0, "aspect": 0.0, "shift": 0.0, "rotation": 0.0, "shear": 0.0, "stroke_dropout": 0.0}
_OURS_STROKE_AUGMENT = {
    "scale": 0.15,
    "aspect": 0.15,
    "shift": 0.08,
    "rotation": 10.0,
    "shear": 0.15,
    "stroke_dropout": 0.05,
}
#: How the project's own recipes train, whatever the model: batch 128, Adam 0.003 on a plateau schedule,
#: label smoothing 0.1, the strokes augmented before drawing or encoding, the images not after.
_OURS_TRAINING = {
    "batch_size": 128,
    "optimizer": "adam",
    "learning_rate": 0.003,
    "schedule": "plateau",
    "label_smoothing": 0.1,
    "augment": dict(_NO_AUGMENT),
    "stroke_augment": dict(_OURS_STROKE_AUGMENT),
}
_BASELINE_RENDER = {"size": 64, "line_width": 6, "channels": 1, "antialias": False}


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str  # one line, with the recipe's source
    overrides: dict[str, Any] = field(default_factory=dict)  # nested like params.yaml
    reference: bool = True  # a published recipe to beat (False: this project's own)

    def flat(self) -> dict[str, Any]:
        """The overrides as dotted keys, e.g. ``{"train.stroke_augment.scale": 0.15}``."""
        return flatten(self.overrides)

    def dvc_command(self) -> str:
        """The one-line ``dvc exp run`` that applies this recipe to params.yaml and runs the pipeline."""
        sets = (f"-S {shlex.quote(f'{key}={hydra_value(value)}')}" for key, value in self.flat().items())
        return " ".join(["dvc exp run", *sets])


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "baseline-mobilenet",
            "The public Kaggle kernel 'Greyscale MobileNet [LB 0.892]' (gaborfodor, 2018): MobileNet alpha 1.0 "
            "from scratch, 64px, 1 channel of stroke order, line width 6, Adam lr 0.002, ReduceLROnPlateau, no "
            "augmentation; batch 128 here (the kernel's 680 on a GPU would leave a 2-core CPU run a few dozen steps)",
            {
                "render": dict(_BASELINE_RENDER),
                "train": {
                    "model": "mobilenet",
                    "width": 1.0,
                    "batch_size": 128,
                    "optimizer": "adam",
                    "learning_rate": 0.002,
                    "schedule": "plateau",
                    "label_smoothing": 0.0,
                    "augment": dict(_NO_AUGMENT),
                    "stroke_augment": dict(_NO_STROKE_AUGMENT),
                },
            },
        ),
        Recipe(
            "seed-cnn",
            "The Quick Draw mini-project's final custom CNN as published (doodle/models/seed_cnn.py, 8.1M params at "
            "340 classes), 64px, 1 channel, Adam lr 0.005, ReduceLROnPlateau, no augmentation, batch 128",
            {
                "render": dict(_BASELINE_RENDER),
                "train": {
                    "model": "seed_cnn",
                    "width": 1.0,
                    "batch_size": 128,
                    "optimizer": "adam",
                    "learning_rate": 0.005,
                    "schedule": "plateau",
                    "label_smoothing": 0.0,
                    "augment": dict(_NO_AUGMENT),
                    "stroke_augment": dict(_NO_STROKE_AUGMENT),
                },
            },
        ),
        Recipe(
            "ours",
            "This project's recipe for real drawings (first candidate, chosen on validation MAP@3 among 3 at a "
            "300 s budget on quickdraw-real15): the cnn at width 0.5, 64px, 3 channels, drawn on the fly with "
            "stroke augmentation, label smoothing 0.1, Adam lr 0.003, ReduceLROnPlateau, batch 128",
            {
                "render": {"size": 64, "line_width": 6, "channels": 3, "antialias": False, "train_cache": False},
                "train": {"model": "cnn", "width": 0.5, **copy.deepcopy(_OURS_TRAINING)},
            },
            reference=False,
        ),
        *(
            Recipe(
                name,
                f"This project's stroke-sequence recipe ({what}): {model} at width 1.0 on the first 128 points of "
                "each drawing (dx, dy, pen state, x, y) straight from the shards, no rendering, the same stroke "
                "augmentation as ours, label smoothing 0.1, Adam lr 0.003, ReduceLROnPlateau, batch 128",
                {
                    "render": {"train_cache": False},  # nothing to render for training; the cache holds validation
                    "train": {
                        "model": model,
                        "width": 1.0,
                        **copy.deepcopy(_OURS_TRAINING),
                        "sequence": {"max_points": 128, "time": False, "position": True},
                    },
                },
                reference=False,
            )
            for name, model, what in (
                ("ours-strokes", "stroke_conv1d", "dilated 1-D convolutions, masked max and mean pooling"),
                ("ours-strokes-rnn", "stroke_rnn", "1-D convolutions then 3 bidirectional LSTMs, masked"),
            )
        ),
    )
}


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, nested mappings key by key (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply(recipe: Recipe, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` (params.yaml as read) with the recipe's overrides merged in."""
    return merge(params, recipe.overrides)


def run_keys_set(recipe: Recipe) -> list[str]:
    """The keys of :data:`RUN_KEYS` that ``recipe`` sets (there should be none)."""
    return [k for k in recipe.flat() if any(k == r or k.startswith(f"{r}.") for r in RUN_KEYS)]


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def hydra_value(value: Any) -> str:
    """``value`` as DVC's ``-S key=value`` (Hydra's override grammar) reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in ("null", "true", "false", "nan", "inf"):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise TypeError(f"no -S form for {value!r}")

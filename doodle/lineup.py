"""The models a run trains: params.yaml's ``models`` mapping, from a name to that model's overrides.

Each named model is the ``train`` section with its overrides merged in, nested as there (``width:
0.75``, ``stroke_augment: {scale: 0.1}``), optionally starting from a recipe (``recipe: ours-strokes``,
doodle.recipes: the recipe's train keys first, then the model's own). dvc.yaml trains each in its own
stage (``train@<name>``, DVC's ``foreach`` over the mapping) into ``models/<name>/``, and predict
blends them (doodle.predict.blend). So ``dvc exp run -S models.strokes.width=0.75`` retrains that
model, then predict and evaluate, and nothing else.

An image model draws as the ``render`` section does (its cache's images: one cache, one validation
split for all), unless it sets its own drawing params, ``render: {size: 32}`` (or its recipe draws
otherwise, e.g. ``recipe: baseline-mobilenet`` at 64px, 1 channel): it then trains and validates on
the same drawings drawn on the fly with its params (``train.render``, doodle.train.params), and
predict and evaluate draw them so too, from its metadata. A total
``train.time_budget_s`` is shared: each model that does not set its own gets an equal part of what
the others' own budgets leave, so a whole blend fits one Kaggle Notebook session.

The ``check`` stage writes each model's resolved train section (:func:`resolved`) to
``reports/models/<name>.json``; that file is its training stage's dependency, so a change that only
moves the budget split (a model added) reruns exactly the models whose budget moved.
"""

from __future__ import annotations

import re
from typing import Any

from doodle.core.params import ParamError, from_mapping
from doodle.models import ARCHITECTURES, reads_images
from doodle.render.params import RenderSection
from doodle.train.params import RASTER_KEYS, TrainParams, check_against

from . import recipes

SECTION = "models"
#: A model's name is a folder name and the tail of a DVC stage name (train@<name>).
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
#: Names a model may not take: models/backup holds the resume state of trainings in progress.
RESERVED = ("backup",)


def names(params: dict[str, Any]) -> list[str]:
    """The model names, in params.yaml's order, each checked (a one-line ParamError otherwise)."""
    table = params.get(SECTION)
    if not isinstance(table, dict) or not table:
        raise ParamError(
            f"param {SECTION}: name at least one model, e.g. `models: {{main: {{}}}}` "
            "(a name and its overrides of the train section)"
        )
    seen: dict[str, str] = {}
    for name in table:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ParamError(
                f"param {SECTION}.{name}: a model name is lower-case letters, digits, '_' and '-' "
                "(up to 40, starting with a letter or digit): it names a folder and a DVC stage"
            )
        if name in RESERVED:
            raise ParamError(f"param {SECTION}.{name}: {name!r} is reserved (models/{name} is the resume state)")
        folded = name.replace("-", "_")
        if folded in seen:  # models/a-b and models/a_b would read alike in every listing
            raise ParamError(f"param {SECTION}: {seen[folded]!r} and {name!r} name the same model twice; rename one")
        seen[folded] = name
    return list(table)


def chosen(params: dict[str, Any], name: str | None) -> str:
    """The model a command works on: ``name`` when given (it must be one params.yaml names), else the
    only one params.yaml names (several: a one-line ParamError asking to pick one)."""
    table = names(params)
    if name is not None:
        overrides(params, name)  # an unknown name is refused, naming the known ones
        return name
    if len(table) != 1:
        raise ParamError(
            f"params.yaml's {SECTION} names {len(table)} models ({', '.join(table)}): pick one with --model"
        )
    return table[0]


def overrides(params: dict[str, Any], name: str) -> dict[str, Any]:
    """Model ``name``'s own overrides (``{}`` for none), checked to be a mapping."""
    if name not in names(params):
        known = ", ".join(names(params))
        raise ParamError(f"unknown model {name!r}: params.yaml's {SECTION} names {known}")
    own = params[SECTION][name]
    if own is None:
        return {}
    if not isinstance(own, dict):
        raise ParamError(f"param {SECTION}.{name}: expected a mapping of train keys (or {{}}), got {own!r}")
    return own


def resolved(params: dict[str, Any], name: str) -> dict[str, Any]:
    """Model ``name``'s train section, as a plain mapping: ``train``, then its recipe's train keys
    (and for an image model, its drawing params as ``render``), then its own overrides, and its part
    of a shared ``train.time_budget_s``."""
    own = dict(overrides(params, name))
    section = dict(params.get("train") or {})
    recipe_name = own.pop("recipe", None)
    if recipe_name is not None:
        recipe = _recipe(name, recipe_name)
        section = recipes.merge(section, recipe.overrides.get("train", {}))
        drawn = {k: v for k, v in recipe.overrides.get("render", {}).items() if k in RASTER_KEYS}
        if drawn and _is_image_model(recipes.merge(section, own)):
            section = recipes.merge(section, {"render": drawn})
    section = recipes.merge(section, own)
    section["time_budget_s"] = budget(params, name)
    return section


def train_params(params: dict[str, Any], name: str) -> TrainParams:
    """Model ``name``'s :class:`TrainParams` (unknown keys and bad values name ``models.<name>.<key>``)."""
    return from_mapping(TrainParams, resolved(params, name), f"{SECTION}.{name}")


def budget(params: dict[str, Any], name: str) -> int | None:
    """Model ``name``'s training budget in seconds: its own ``time_budget_s`` when it sets one, else
    an equal part (whole seconds, rounded down) of the shared ``train.time_budget_s`` left after the
    models that set their own (None: no budget)."""
    own = overrides(params, name)
    if "time_budget_s" in own:
        return own["time_budget_s"]
    total = (params.get("train") or {}).get("time_budget_s")
    if total is None:
        return None
    table = {n: overrides(params, n) for n in names(params)}
    fixed = [o["time_budget_s"] for o in table.values() if o.get("time_budget_s") is not None]
    sharing = sum(1 for o in table.values() if "time_budget_s" not in o)
    left = total - sum(fixed)
    if left <= 0:
        raise ParamError(
            f"param train.time_budget_s: {total} s is shared by the models, but models' own budgets "
            f"already take {sum(fixed)} s; raise it or lower theirs"
        )
    return int(left // sharing)  # whole seconds, as train.time_budget_s takes them


def check_models(params: dict[str, Any], render_cfg: RenderSection, shard_count: int | None = None) -> dict:
    """Every model resolved and checked as the train stage will (one-line ParamError naming the
    model): its train keys and values, and its params against the render and shard params.
    Returns {name: TrainParams}."""
    out = {}
    for name in names(params):
        cfg = train_params(params, name)
        try:
            check_against(cfg, render_cfg, shard_count)
        except ParamError as exc:
            raise ParamError(f"model {name}: {exc}") from None
        out[name] = cfg
    return out


def _is_image_model(section: dict[str, Any]) -> bool:
    """Whether a resolved section's model reads images (an unknown model is left to validation)."""
    model = section.get("model", "cnn")
    return model in ARCHITECTURES and reads_images(model)


def _recipe(name: str, recipe_name: Any) -> recipes.Recipe:
    if not isinstance(recipe_name, str) or recipe_name not in recipes.RECIPES:
        raise ParamError(
            f"param {SECTION}.{name}.recipe: unknown recipe {recipe_name!r}; choose one of {', '.join(recipes.RECIPES)}"
        )
    return recipes.RECIPES[recipe_name]

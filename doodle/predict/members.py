"""The models predict averages, grouped by the model they make up, and their weights in the blend.

A group is one named model of params.yaml's ``models`` (doodle.lineup): its file, or with
``train.folds`` or ``train.seeds`` > 1 its ensemble members, averaged equally. The blend weighs the
groups (``predict.weights``: fitted on the validation shards by default, equal, or given), so a
3-seed model counts as one model, not three. Since the blend is a weighted mean of probabilities,
it equals one weighted mean over every file with weight ``w_group / len(group)``
(:func:`file_weights`), which is how the test file is predicted. reports/blend.json records the
groups, their files and weights and what the fit measured; evaluate scores the same blend.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from doodle.core.metrics import map_at_3
from doodle.core.params import ParamError
from doodle.shard.format import read_manifest

from .blend import check_held_out, fit_weights, model_probs, validation_rows
from .inference import TrainedModel

log = logging.getLogger("doodle.predict")


@dataclass
class Group:
    """One model of the blend: its name and the files averaged to make it."""

    name: str
    models: list[TrainedModel]


def resolve_groups(models: str | list[str], names: list[str], models_dir: Path) -> list[tuple[str, list[Path]]]:
    """(name, files) of each model to average. ``auto``: each model params.yaml's ``models`` names
    (``names``), as the train stage wrote it into models/<name>/: its ensemble's members
    (members/*.keras, with train.folds or train.seeds > 1), else its model.keras (with an ensemble,
    model.keras is a copy of one member, so it is left out rather than counted twice). A list:
    each file its own model, named by its path."""
    if models != "auto":
        twice = sorted({m for m in models if models.count(m) > 1})
        if twice:
            raise ParamError(f"predict.models: {', '.join(twice)} listed twice (it would count double)")
        return [(m, [Path(m)]) for m in models]
    out = []
    for name in names:
        folder = models_dir / name
        members = sorted((folder / "members").glob("*.keras"))
        out.append((name, members or [folder / "model.keras"]))
    return out


def load_groups(spec: list[tuple[str, list[Path]]]) -> list[Group]:
    """The models to average, loaded, checked to share one class list."""
    groups = [Group(name, [TrainedModel.load(p) for p in paths]) for name, paths in spec]
    first = groups[0].models[0]
    for g in groups:
        for m in g.models:
            if m.classes != first.classes:
                raise ParamError(f"predict.models: {m.path} was trained on other classes than {first.path}")
    log.info("predicting with %s", "; ".join(f"{g.name} ({len(g.models)} file(s))" for g in groups))
    return groups


def flat(groups: list[Group]) -> list[TrainedModel]:
    """Every file of every group, in order."""
    return [m for g in groups for m in g.models]


def file_weights(groups: list[Group], weights: list[float] | None) -> list[float]:
    """Each file's weight in the one mean over all files: its group's weight (equal when None),
    shared equally by the group's files."""
    weights = [1.0] * len(groups) if weights is None else weights
    total = float(sum(weights))
    return [w / total / len(g.models) for g, w in zip(groups, weights) for _ in g.models]


def group_probs(groups: list[Group], per_file: list[np.ndarray]) -> list[np.ndarray]:
    """Each group's probabilities: the mean of its files' (``per_file``, in :func:`flat` order)."""
    out, i = [], 0
    for g in groups:
        out.append(np.mean(per_file[i : i + len(g.models)], axis=0))
        i += len(g.models)
    return out


def blend_weights(weights, fit_rows: int, batch_size: int, tta_flip: bool, groups: list[Group], shards: Path) -> dict:
    """The groups' weights (``weights``: ``predict.weights``; ``weights`` None in the result: equal)
    and, when fitted on the validation drawings of ``shards``, what the fit measured: each group's
    MAP@3 alone and the blend's (:mod:`doodle.predict.blend`)."""
    if isinstance(weights, list) and len(weights) != len(groups):
        names = ", ".join(g.name for g in groups)
        raise ParamError(f"predict.weights: {len(weights)} weights for {len(groups)} models ({names})")
    if weights is None or len(groups) == 1:
        return {}
    if weights != "fit":
        return {"weights": [float(w) for w in weights]}
    manifest = read_manifest(shards)
    models = flat(groups)
    check_held_out(models, [json.loads(m.path.with_suffix(".json").read_text()) for m in models], manifest)
    batches, labels = validation_rows(shards, manifest, fit_rows)
    probs = group_probs(groups, model_probs(models, batches, batch_size, tta_flip))
    fitted, blended = fit_weights(probs, labels)
    alone = {g.name: round(map_at_3(labels, p), 4) for g, p in zip(groups, probs)}
    log.info("blend weights %s on %d val drawings: MAP@3 %.4f (alone %s)", fitted, len(labels), blended, alone)
    return {
        "weights": [round(float(w), 4) for w in fitted],
        "fit_rows": len(labels),
        "val_map_at_3_alone": alone,
        "val_map_at_3_blend": round(blended, 4),
    }


def blend_record(groups: list[Group], blend: dict, tta_flip: bool = False) -> dict:
    """reports/blend.json: each group's files and weight, whether each model's probabilities average
    in the mirrored drawings' (``predict.tta_flip``: what evaluate scores, as predict blended), and
    the fit's figures."""
    weights = blend.get("weights") or [1.0] * len(groups)
    total = float(sum(weights))
    alone = blend.get("val_map_at_3_alone", {})
    return {
        "models": [
            {
                "name": g.name,
                "files": [str(m.path) for m in g.models],
                "weight": round(w / total, 4),
                **({"val_map_at_3": alone[g.name]} if g.name in alone else {}),
            }
            for g, w in zip(groups, weights)
        ],
        "tta_flip": tta_flip,
        **({"fit_rows": blend["fit_rows"], "val_map_at_3_blend": blend["val_map_at_3_blend"]} if alone else {}),
    }


def write_blend_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def read_blend_record(path: Path) -> tuple[list[tuple[str, list[Path], float]], bool]:
    """The blend of ``path`` (reports/blend.json): (name, files, weight) of each model it averages,
    and whether each model's probabilities average in the mirrored drawings' (``tta_flip``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the predict stage first (it fits and records the blend)")
    record = json.loads(path.read_text())
    models = [(m["name"], [Path(f) for f in m["files"]], float(m["weight"])) for m in record["models"]]
    return models, bool(record.get("tta_flip", False))

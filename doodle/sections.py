"""params.yaml's sections, each read by one dataclass: the one map from section to dataclass.

Every stage loads only the sections it uses (:func:`doodle.core.params.load_section`); this map is
for what looks at params.yaml as a whole: :func:`load_all` checks every section at once (the
recipes and the quality benchmark, before any training), :func:`check_all` adds the checks across
sections (the ``check`` stage, before DVC touches any stage's outputs), and the tests compare each
dataclass's defaults with params.yaml (the one source of defaults). Importing it loads no
framework. It sits above every subpackage, since it names a dataclass of each.
"""

from __future__ import annotations

from typing import Any

from doodle.baseline.run import BaselineParams
from doodle.core.params import ParamError, from_mapping
from doodle.evaluate.params import EvaluateParams
from doodle.predict.run import PredictParams
from doodle.render.params import RenderSection
from doodle.sample.generate import SampleParams
from doodle.shard.params import ShardParams
from doodle.sources.folder import PIXEL_KINDS, DataParams
from doodle.train.params import TrainParams

from . import lineup

SECTIONS: dict[str, type] = {
    "data": DataParams,
    "sample": SampleParams,
    "shard": ShardParams,
    "render": RenderSection,
    "train": TrainParams,
    "predict": PredictParams,
    "baseline": BaselineParams,
    "evaluate": EvaluateParams,
}


def load_all(params: dict[str, Any]) -> dict[str, Any]:
    """Every section of ``params`` through its dataclass (:func:`doodle.core.params.from_mapping`):
    an unknown section or key, or a value of the wrong type or range, raises a ParamError naming
    it. Returns {section: dataclass instance}; ``models`` (a mapping of names, doodle.lineup) as
    {name: the model's TrainParams}."""
    unknown = sorted(set(params) - set(SECTIONS) - {lineup.SECTION})
    if unknown:
        known = ", ".join([*SECTIONS, lineup.SECTION])
        raise ParamError(f"unknown params.yaml section(s) {unknown}; known: {known}")
    out = {
        section: from_mapping(SECTIONS[section], raw, section) for section, raw in params.items() if section in SECTIONS
    }
    if lineup.SECTION in params:
        out[lineup.SECTION] = {name: lineup.train_params(params, name) for name in lineup.names(params)}
    return out


def check_all(params: dict[str, Any], source_kind: str | None = None) -> dict[str, Any]:
    """:func:`load_all`, then what one section's values must agree with in another's, as far as the
    params and the layout of data.source (``source_kind``, when known) tell; the data itself is
    checked by each stage. Raises a one-line ParamError."""
    sections = load_all(params)
    render, shard_count = sections.get("render", RenderSection()), sections.get("shard", ShardParams()).count
    models = lineup.check_models(params, render, shard_count)
    for name, cfg in models.items():
        if source_kind in PIXEL_KINDS and not cfg.reads_images:
            raise ParamError(
                f"model {name}: train.model {cfg.model} reads strokes, but data.source holds images "
                f"({source_kind}): choose an image model"
            )
    return sections

"""params.yaml's sections, each read by one dataclass: the one map from section to dataclass.

Every stage loads only the sections it uses (:func:`doodle.core.params.load_section`); this map is
for what looks at params.yaml as a whole: :func:`load_all` checks every section at once (the
recipes and the quality benchmark, before any training), and the tests compare each dataclass's
defaults with params.yaml (the one source of defaults). It sits above every subpackage, since it
names a dataclass of each.
"""

from __future__ import annotations

from typing import Any

from doodle.batches.cache import CacheParams
from doodle.core.params import ParamError, from_mapping
from doodle.evaluate.views import ViewParams
from doodle.predict.run import PredictParams
from doodle.sample.generate import SampleParams
from doodle.shard.run import ShardParams
from doodle.sources.folder import DataParams
from doodle.train.baseline import BaselineParams
from doodle.train.params import TrainParams

SECTIONS: dict[str, type] = {
    "data": DataParams,
    "sample": SampleParams,
    "shard": ShardParams,
    "render": CacheParams,
    "train": TrainParams,
    "predict": PredictParams,
    "baseline": BaselineParams,
    "evaluate": ViewParams,
}


def load_all(params: dict[str, Any]) -> dict[str, Any]:
    """Every section of ``params`` through its dataclass (:func:`doodle.core.params.from_mapping`):
    an unknown section or key, or a value of the wrong type or range, raises a ParamError naming
    it. Returns {section: dataclass instance}."""
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise ParamError(f"unknown params.yaml section(s) {unknown}; known: {', '.join(SECTIONS)}")
    return {section: from_mapping(SECTIONS[section], raw, section) for section, raw in params.items()}

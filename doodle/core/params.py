"""Typed access to ``params.yaml``.

Every stage reads its section through :func:`load_section`, which checks names and types so a
typo or a wrong value fails at once with the offending key in the message, instead of deep
inside a stage hours later.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

DEFAULT_PARAMS = Path("params.yaml")


class ParamError(UserError, ValueError):
    """A missing, unknown or mistyped entry of params.yaml (the key is named)."""


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 (and DVC, which writes params.yaml with
    ruamel.yaml) does. PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent:
    ``3e-5``, ``1e3``, ``1.5e3`` and ``3e-05`` (what ``dvc exp run -S train.learning_rate=3e-5``
    writes) would be strings."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"params file not found: {path.resolve()}")
    try:
        with path.open() as fh:
            data = yaml.load(fh, Loader=ParamsLoader) or {}
    except yaml.YAMLError as exc:
        raise ParamError(_yaml_error(path, exc)) from None
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of sections at the top level")
    return data


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line:column: what`` (1-based, as editors count) for a YAML syntax error."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    what = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p) or str(exc)
    return f"{where}: not valid YAML: {what}"


def _accepts(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def describe_type(tp: Any) -> str:
    """A param type in words, for error messages: ``a number``, ``a whole number or null``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(arg) for arg in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return f"a list of {describe_type(item).removeprefix('a ').removeprefix('an ')}s"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    words = {
        float: "a number",
        int: "a whole number",
        bool: "true or false",
        str: "a string",
        dict: "a mapping",
        type(None): "null",
        Any: "anything",
    }
    return words.get(tp, getattr(tp, "__name__", str(tp)))


def from_mapping(cls: type, raw: dict[str, Any] | None, where: str):
    """Build dataclass ``cls`` from ``raw``; unknown keys and wrong types name ``where.key``."""
    raw = dict(raw or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ParamError(
            f"unknown param(s) {', '.join(f'{where}.{k}' for k in unknown)}; known: {', '.join(sorted(names))}"
        )
    for key, value in raw.items():
        if isinstance(value, float) and value.is_integer() and not _accepts(hints[key], value):
            value = raw[key] = int(value)  # 1e3 or 600.0 where a whole number is expected
        if not _accepts(hints[key], value):
            raise ParamError(f"param {where}.{key} = {value!r}: expected {describe_type(hints[key])}")
    try:
        obj = cls(**raw)
    except TypeError as exc:  # a required key is missing
        raise ParamError(f"section {where}: {exc}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        check(where)
    return obj


def load_section(cls: type, section: str, params: dict[str, Any] | None = None, path: str | Path = DEFAULT_PARAMS):
    params = read_params(path) if params is None else params
    return from_mapping(cls, params.get(section), section)


def require(cond: bool, key: str, message: str) -> None:
    """Raise a ParamError naming ``key`` unless ``cond``."""
    if not cond:
        raise ParamError(f"param {key}: {message}")

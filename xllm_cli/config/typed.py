"""Plain YAML data -> typed dataclasses, refusing what does not fit with the key's path.

Each config section is a dataclass whose field annotations are the schema:
``int``, ``float``, ``str``, ``bool``, ``X | None``, ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]``, ``Literal[...]``, ``Any`` and nested dataclasses. ``parse`` checks
one mapping against a dataclass and builds it; every problem is a one-line
:class:`XllmError` such as ``recipe.yaml: stage1.epochs: expected an integer, got 'one'``
or ``--set: stag1: unknown key (did you mean stage1?)``. ``to_dict`` goes back to plain
data for ``config.yaml``.

A dataclass may define ``__post_parse__(self, where)`` for rules that span fields
(``where`` is the dotted path, for messages).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

from ..errors import XllmError

_NONE = type(None)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if origin is tuple and Ellipsis not in typing.get_args(tp):
            return f"a list of {len(args)} values"
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is _NONE else _describe(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _fail(where: str, message: str):
    raise XllmError(f"{where}: {message}")


def _coerce(value: Any, tp, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (numbers widen int -> float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and _NONE in args:
            return None
        errors = []
        for arg in args:
            if arg is _NONE:
                continue
            try:
                return _coerce(value, arg, where)
            except XllmError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        _fail(where, f"expected {_describe(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        _fail(where, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        _fail(where, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        _fail(where, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        _fail(where, f"expected a string, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        _fail(where, f"expected {_describe(tp)}, got {value!r}")
    if origin is list:
        if isinstance(value, str) and typing.get_args(tp) == (str,):
            return [value]  # `dev: dev` names one data directory
        if not isinstance(value, (list, tuple)):
            _fail(where, f"expected {_describe(tp)}, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            _fail(where, f"expected {_describe(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            _fail(where, f"expected {_describe(tp)}, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            _fail(where, f"expected a mapping, got {value!r}")
        _, item = typing.get_args(tp) or (str, Any)
        return {str(k): _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"{where}: unsupported annotation {tp!r}")  # a schema bug, not user input


def check_keys(cls, data: dict, where: str) -> None:
    """Refuse keys that ``cls`` does not have, suggesting the closest known one."""
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"
            _fail(f"{where}.{key}" if where else str(key), f"unknown key{hint}")


def parse(cls, data: Any, where: str = ""):
    """Build dataclass ``cls`` from the mapping ``data`` (None = all defaults)."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        _fail(where or cls.__name__, f"expected a mapping of options, got {data!r}")
    check_keys(cls, data, where)
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = _coerce(data[f.name], hints[f.name], f"{where}.{f.name}" if where else f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            values[f.name] = _coerce(None, hints[f.name], f"{where}.{f.name}" if where else f.name)
    obj = cls(**values)
    post = getattr(obj, "__post_parse__", None)
    if post is not None:
        post(where or cls.__name__)
    return obj


def check_partial(cls, data: Any, where: str) -> dict:
    """A mapping of some of ``cls``'s fields, each checked; for per-stage overrides."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        _fail(where, f"expected a mapping of options, got {data!r}")
    check_keys(cls, data, where)
    hints = _hints(cls)
    return {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) for YAML; tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def describe_type(tp) -> str:
    """The annotation in words (for the generated config reference)."""
    return _describe(tp)

"""Checking values read from files against declared types and ranges, in exactly one place.

Two kinds of schema, one checker (``check_value``):
- a dataclass (``check_dataclass``): the config (``common.config``), the claims registries (``leaderboard``) and the
  head of a result file (``common.results``). A field's range is ``field(metadata=rng(...))``; ``nonempty()``
  refuses a blank string; a ``check(self, path)`` method states the rules between fields.
- a registered callable's signature (``check_kwargs``/``check_spec``): the keyword arguments of every quantizer,
  model and post-training method (as in Distiller), with a ``ranges`` class attribute of the same ``Range``.
Every failure is a ``UserError`` naming the key path and what was expected.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

from common.errors import UserError


@dataclass(frozen=True)
class Range:
    """Allowed numeric interval: ``lo``/``hi`` inclusive unless ``lo_open``/``hi_open``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            return False
        return True

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None and not (self.lo_open or self.hi_open):
            return f"in {self.lo}..{self.hi}"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi}")
        return " and ".join(parts) or "any number"


def rng(**kw) -> dict:
    """A dataclass field's range: ``field(default=..., metadata=rng(lo=0, lo_open=True))``."""
    return {"range": Range(**kw)}


def nonempty() -> dict:
    """A required string field that may not be blank: ``field(metadata=nonempty())``."""
    return {"nonempty": True}


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping with " + ", ".join(f.name for f in dataclasses.fields(tp))
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return f"a list of {type_name(item)}"
    if origin is dict or tp is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


class Mismatch(UserError):
    """The value is not of the expected kind (a union tries its next member); a range error is not a mismatch."""


def _fail(path: str, expected: str, value: Any, error: type[UserError] = Mismatch) -> UserError:
    return error(f"{path}: expected {expected}, got {value!r}")


def check_value(value: Any, tp: Any, path: str, rng: Range | None = None) -> Any:
    """Return ``value`` checked (and int->float widened) against type ``tp`` and range ``rng``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return check_dataclass(tp, value, path)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return check_value(value, a, path, rng)
            except UserError as e:
                errors.append(e)
        # a range error on a matching type is more useful than "expected int or str"
        for e in errors:
            if not isinstance(e, Mismatch):
                raise e
        raise _fail(path, type_name(tp), value)
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool) != any(isinstance(a, bool) for a in typing.get_args(tp)):
            raise _fail(path, type_name(tp), value)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _fail(path, type_name(tp), value)
        (item,) = typing.get_args(tp) or (Any,)
        return [check_value(v, item, f"{path}[{i}]", rng) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise _fail(path, "a mapping", value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, "true/false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, "an integer" + (f" {rng}" if rng else ""), value)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, "a number" + (f" {rng}" if rng else ""), value)
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise _fail(path, "a string", value)
        return value
    else:
        raise TypeError(f"unsupported schema type {tp!r} at {path}")
    if rng is not None and not rng.contains(value):
        raise _fail(path, f"a value {rng}", value, UserError)
    return value


def key_path(path: str, key: str) -> str:
    """``path.key``; a path that ends in ": " (a file and an entry, say) is followed by the key directly."""
    return f"{path}{key}" if not path or path.endswith(": ") else f"{path}.{key}"


def check_dataclass(cls: type, data: Any, path: str = "", extra: bool = False) -> Any:
    """An instance of dataclass ``cls`` from the mapping ``data``: every key known (unless ``extra``: then the others
    are ignored), every field without a default given, each value checked against its annotation and its field's
    ``rng``/``nonempty`` metadata (nested dataclasses and lists of them included), then ``cls.check(path)`` if any."""
    if not isinstance(data, dict):
        raise _fail(path.removesuffix(": ") or "(top level)", type_name(cls), data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown and not extra:
        raise Mismatch(f"{key_path(path, unknown[0])}: unknown key (expected one of: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise Mismatch(f"{key_path(path, name)}: missing required key ({type_name(hints[name])})")
            continue
        try:
            value = check_value(data[name], hints[name], key_path(path, name), f.metadata.get("range"))
        except Mismatch as e:  # the keys are this class's: a wrong value is an error of that key, not of the kind
            raise UserError(str(e)) from None
        if f.metadata.get("nonempty") and not (isinstance(value, str) and value.strip()):
            raise _fail(key_path(path, name), "a non-empty string", value, UserError)
        kwargs[name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


def check_kwargs(fn: Callable, kwargs: dict, path: str, ranges: dict[str, Range] | None = None,
                 skip: tuple[str, ...] = ()) -> dict:
    """Validate ``kwargs`` against ``fn``'s annotated keyword parameters (the schema is the signature)."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    params = {n: p for n, p in sig.parameters.items()
              if n not in skip and n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    out = {}
    for key, value in kwargs.items():
        if key not in params:
            raise UserError(f"{path}.{key}: unknown key (expected one of: {', '.join(sorted(params)) or 'none'})")
        out[key] = check_value(value, hints.get(key, Any), f"{path}.{key}", (ranges or {}).get(key))
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and name not in out:
            raise UserError(f"{path}.{name}: missing required key ({type_name(hints.get(name, Any))})")
    return out


def registrar(registry: dict[str, Callable], what: str) -> Callable[[str], Callable]:
    """``@register("name")`` for a registry of named entries (models, post-training methods): a name taken twice is
    a programming error."""

    def register(name: str) -> Callable:
        def deco(entry: Callable) -> Callable:
            if name in registry:
                raise ValueError(f"{what} {name!r} registered twice")
            registry[name] = entry
            return entry

        return deco

    return register


def check_spec(spec: Any, registry: dict[str, Callable], path: str, what: str,
               skip: tuple[str, ...] = ()) -> dict:
    """Validate a ``{name: ..., **kwargs}`` mapping against a registry entry's signature and ranges."""
    if not isinstance(spec, dict):
        raise _fail(path, f"a mapping with 'name' (a {what})", spec)
    name = spec.get("name")
    if name not in registry:
        raise UserError(f"{path}.name: unknown {what} {name!r} (expected one of: {', '.join(sorted(registry))})")
    entry = registry[name]
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    target = entry.__init__ if inspect.isclass(entry) else entry
    checked = check_kwargs(target, kwargs, path, getattr(entry, "ranges", None), skip=skip)
    return {"name": name, **checked}

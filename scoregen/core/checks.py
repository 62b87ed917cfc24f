"""Argument checks shared across the package: positive sizes, values against their annotations, a value
among allowed choices or in an interval (the samplers' and the likelihoods' options).

Each raises a ValueError that names the argument, what is allowed and what was given. Values come from
JSON or the command line, so the rules are JSON's: an int is a number, a bool is neither.
"""
from __future__ import annotations

import os
import types
import typing
from numbers import Real


def check_sizes(**sizes) -> None:
    """Raise unless every ``name=value`` is a positive integer (the sizes of splits and batches, say)."""
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive integer; got {n!r}")


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
          list: "a list", type(None): "null", os.PathLike: "a path"}


def _matches(value, kind) -> bool:
    """``isinstance`` by JSON's rules: no bool for int or float, an int for a float; generics pass."""
    if kind is type(None):
        return value is None
    if kind in (int, float) and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return not isinstance(kind, type) or isinstance(value, kind)


def check_types(owner, values: dict, what: str) -> None:
    """Raise unless each ``values[name]`` matches the annotation of ``name`` on ``owner`` (a function or a
    class; unions allowed); ``what`` names the values in the message, e.g. ``"config field"``."""
    hints = typing.get_type_hints(owner)
    for name, value in values.items():
        hint = hints.get(name)
        if hint is None:
            continue
        union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        kinds = typing.get_args(hint) if union else (hint,)
        if not any(_matches(value, kind) for kind in kinds):
            allowed = " or ".join(_NAMES.get(kind, getattr(kind, "__name__", str(kind))) for kind in kinds)
            raise ValueError(f"{what} {name!r} must be {allowed}; got {value!r} ({type(value).__name__})")


def check_choice(name: str, value, allowed) -> None:
    """Raise unless ``value`` is one of ``allowed`` (a tuple or a ``Literal``)."""
    allowed = typing.get_args(allowed) or tuple(allowed)
    if isinstance(value, bool) != isinstance(allowed[0], bool) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def check_range(name: str, value, lo: float, hi: float, lo_open=True, hi_open=True) -> None:
    """Raise unless ``value`` is a number in the interval (open or closed at each end)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and (lo < value if lo_open else lo <= value) \
        and (value < hi if hi_open else value <= hi)
    if not ok:
        span = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must be a number in {span}; got {value!r}")


def check_t_min(t_min) -> None:
    """Raise unless ``t_min``, the smallest time a model is trained at and its samplers and likelihoods stop at,
    is a number in (0, 1): at t = 0 the score eps / sigma is singular."""
    check_range("t_min", t_min, 0.0, 1.0)


def check_tolerances(**tols) -> None:
    """Raise unless every ``name=value`` is a tolerance of an adaptive ODE solver (rtol, atol): a number in
    (0, 1); zero, negative or NaN tolerances would give wrong numbers or blame the network."""
    for name, value in tols.items():
        check_range(name, value, 0.0, 1.0)

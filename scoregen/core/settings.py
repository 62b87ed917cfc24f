"""Settings declared once: a dataclass field holds a setting's name, type, default, choices and help, and the
command-line parser is generated from the fields (as the samplers' options are from their signatures).

    @dataclass(frozen=True)
    class CompareSettings:
        n: int | None = setting(None, "samples per row (default: 500 for images, 2000 otherwise)", short="-n",
                                parse=count(2))

``add_arguments(parser, cls)`` adds one flag per field (``--n``, with ``-n``), its help ending in the field's
default; every flag's argparse default is ``SUPPRESS``, so a flag that is not given is absent from the namespace
and ``from_args(cls, args)`` leaves the field at its dataclass default: no default is written twice. A bool
field with default False is a switch (``--quick``); one with default True is turned off by its ``flag``
(``--no-progress``). A ``repeat`` field collects every occurrence (``-o k=v -o k2=v2``) and ``parse`` reads the
list; otherwise ``parse`` reads one value (argparse's ``type``: its errors are one line).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import types
import typing
from pathlib import Path

_NONE = object()


def setting(default=None, help: str = "", *, factory=None, flag: str | None = None, aliases: tuple = (),
            short: str | None = None, metavar: str | None = None, parse=None, choices=None, repeat: bool = False,
            positional: bool = False, required: bool = False, cli: bool = True):
    """A dataclass field with what the CLI needs in its metadata (module docstring). ``factory``: a default
    factory for mutable defaults; ``positional``: an argument, optional unless ``required``; ``required``: the
    command line must give it (the Python default None is then checked by the command); ``cli=False``: a
    Python-only field (no flag)."""
    meta = {"setting": dict(help=help, flag=flag, aliases=tuple(aliases), short=short, metavar=metavar, parse=parse,
                            choices=choices, repeat=repeat, positional=positional, required=required, cli=cli)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def dataset_options_setting():
    """The ``--dataset-option KEY=VALUE`` setting (repeatable): the data set loader's options as a dict."""
    return setting(None, "data set loader option, e.g. mixture=ring8 or size=32 (repeatable)", flag="--dataset-option",
                   metavar="KEY=VALUE", repeat=True, parse=lambda items: parse_options(items, "--dataset-option"))


def data_path_setting():
    """The ``--data-path`` setting: the loader's ``path`` option (``data.with_data_path`` merges the two)."""
    return setting(None, "the folder or .npz file of --dataset folder|npz (the loader's path)")


def progress_setting():
    """The ``--no-progress`` switch of the commands with progress bars."""
    return setting(True, "no progress bars", flag="--no-progress")


def device_setting():
    """The ``--device`` setting every command shares."""
    return setting(None, "cpu, cuda or cuda:N (default: cuda if available)")


def threads_setting():
    """The ``--threads`` setting every command shares (``app.cli`` applies it): N, or "auto" (``thread_count``)."""
    return setting("auto", "torch's CPU threads: N, or auto: OMP_NUM_THREADS when set (torchrun sets 1 per process), "
                           "else torch's default less the cores busy with other work (the load average), at least 1",
                   metavar="N", parse=thread_count)


def dtype_setting(choices: tuple):
    """The ``--dtype`` setting of the commands that sample an eps-network: ``choices`` are
    ``models.loading.DTYPES``' names."""
    return setting(None, "the eps-network's compute dtype: bf16/fp16 run it under autocast, the sampler in fp32 "
                         "(default: fp32)", choices=choices)


def count(low: int):
    """A flag's type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}; got {text!r}")
        return value
    return parse


def thread_count(text: str) -> int | str:
    """A flag's type: "auto" or an integer >= 1."""
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 or auto; got {text!r}")
    return text if text == "auto" else int(text)


def number(text: str, what: str):
    """``text`` as an int, else a float; an error names ``what``."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ValueError(f"{what}: {text!r} is not a number")


def parse_options(items, flag: str = "-o/--option", reserved: dict | None = None) -> dict:
    """``["k=v", ...]`` -> ``{k: v}``, each value a Python literal where it parses as one, else a string.
    ``reserved`` maps keys that have a flag of their own to that flag (an error names it)."""
    options = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE; got {item!r}")
        if key in (reserved or {}):
            raise ValueError(f"{flag} {item}: {key} has its own option, {reserved[key]}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def declared(cls) -> list[tuple[dataclasses.Field, dict]]:
    """The fields of ``cls`` that are settings of the command line, with their metadata."""
    return [(f, f.metadata["setting"]) for f in dataclasses.fields(cls)
            if "setting" in f.metadata and f.metadata["setting"]["cli"]]


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def flags_of(f: dataclasses.Field, meta: dict) -> list[str]:
    """The flags of a field: ``short``, then ``flag`` (default ``--name-with-dashes``) and ``aliases``."""
    main = meta["flag"] or "--" + f.name.replace("_", "-")
    return ([meta["short"]] if meta["short"] else []) + [main] + list(meta["aliases"])


def _type_of(hint):
    """The argparse type of an annotation: its one type besides None (int, float, str or Path)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    return hint if hint in (int, float, str, Path) else str


def _help(f: dataclasses.Field, meta: dict) -> str:
    default = default_of(f)  # None, a switch's bool and an empty collection say nothing (0 and 1 do: not ``in``)
    if default is None or isinstance(default, bool) or default in ({}, []) or "(default" in meta["help"]:
        return meta["help"]
    return f"{meta['help']} (default: {default})"


def add_arguments(parser: argparse.ArgumentParser, cls, dest_prefix: str = "") -> None:
    """One argument per setting of ``cls`` (module docstring); ``dest_prefix`` keeps two classes' names apart."""
    hints = typing.get_type_hints(cls)
    for f, meta in declared(cls):
        kwargs = dict(dest=dest_prefix + f.name, default=argparse.SUPPRESS, help=_help(f, meta))
        if hints[f.name] is bool:
            kwargs["action"] = "store_false" if default_of(f) else "store_true"
        else:
            kwargs.update(action="append" if meta["repeat"] else "store", metavar=meta["metavar"],
                          choices=meta["choices"])
            if not meta["repeat"]:
                kwargs["type"] = meta["parse"] or _type_of(hints[f.name])
        if meta["positional"]:  # an absent optional one is None (argparse would pass SUPPRESS through its type)
            optional = {} if meta["required"] else {"nargs": "?", "default": None}
            parser.add_argument(kwargs.pop("dest"), **{**kwargs, **optional})
        else:
            parser.add_argument(*flags_of(f, meta), **kwargs, **({"required": True} if meta["required"] else {}))


def given(cls, args: argparse.Namespace, dest_prefix: str = "") -> dict:
    """The settings of ``cls`` given on the command line: ``{field: value}``, repeated flags read by ``parse``."""
    out = {}
    for f, meta in declared(cls):
        value = getattr(args, dest_prefix + f.name, _NONE)
        if value is not _NONE and not (meta["positional"] and value is None):
            out[f.name] = meta["parse"](value) if meta["repeat"] and meta["parse"] else value
    return out


def from_args(cls, args: argparse.Namespace, **extra):
    """``cls`` built from the settings given on the command line (the rest at their defaults) and ``extra``."""
    return cls(**given(cls, args), **extra)


__all__ = ["setting", "dataset_options_setting", "data_path_setting", "progress_setting", "device_setting",
           "threads_setting", "dtype_setting", "count", "thread_count", "number", "parse_options", "declared",
           "flags_of", "add_arguments", "given", "from_args"]

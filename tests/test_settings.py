"""Settings declared once (``core.settings``): every command's parser is generated from its settings dataclasses,
so each flag's name, default and choices come from one field; a flag that is not given leaves its field at the
dataclass default, and one that is given reaches its field."""
import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from scoregen.app import cli
from scoregen.app.commands import ExportSettings, SampleSettings, TuneGridSettings, TuneSettings
from scoregen.core.settings import (add_arguments, count, declared, default_of, from_args, given, parse_options,
                                    setting, thread_count)
from scoregen.evaluation.compare import CompareSettings
from scoregen.evaluation.likelihood import LikelihoodSettings
from scoregen.models.checkpoint import TrainConfig, TrainRun

SETTINGS = {"train": (TrainRun, TrainConfig), "export": (ExportSettings,), "sample": (SampleSettings,),
            "tune-grid": (TuneGridSettings,), "tune": (TuneSettings,), "likelihood": (LikelihoodSettings,),
            "compare": (CompareSettings,)}
REQUIRED = {"export": ["a.pt", "b.pt"], "tune-grid": ["a.pt", "--method", "ddim", "--steps", "3"],
            "tune": ["a.pt", "--steps", "3"]}


def subparser(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser(command)
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_flag_is_a_field_with_its_default_from_the_dataclass(command):
    fields = {f.name: (f, meta) for cls in (*SETTINGS[command], cli.ProcessSettings) for f, meta in declared(cls)}
    actions = [a for a in subparser(command)._actions if a.dest != "help"]
    assert sorted(a.dest for a in actions) == sorted(fields)   # one flag per declared setting, no other
    for action in actions:
        f, meta = fields[action.dest]
        assert action.default is (None if action.nargs == "?" else argparse.SUPPRESS), action.dest  # none of its own
        assert action.choices == meta["choices"]
        default = default_of(f)
        assert f"(default: {default})" not in meta["help"], meta["help"]  # the default is written by the parser
        if default not in (None, False, True, {}, []):
            assert f"(default: {default})" in action.help or "(default" in meta["help"], action.help


@pytest.mark.parametrize("command", [c for c in cli.COMMANDS if c != "train"])
def test_an_empty_command_line_gives_the_dataclass_defaults(command):
    (cls,) = SETTINGS[command]
    args = cli.build_parser(command).parse_args([command, *REQUIRED.get(command, [])])
    settings = from_args(cls, args)
    given = {k: v for k, v in dataclasses.asdict(settings).items() if v != dataclasses.asdict(cls())[k]}
    assert set(given) <= {"checkpoint", "dest", "method", "steps"}


def test_train_flags_reach_the_config_and_the_rest_keeps_its_defaults():
    args = cli.build_parser("train").parse_args(["train", "--steps", "7", "--lr", "1e-3", "--model", "mlp",
                                                 "--dataset", "gmm", "--no-progress"])
    run = from_args(TrainRun, args, fields=given(TrainConfig, args))
    config = run.train_config()
    assert (config.steps, config.lr, config.model, config.out, run.progress) == (7, 1e-3, {"arch": "mlp"},
                                                                                  "runs/gmm", False)
    assert config.batch_size == TrainConfig().batch_size and config.ema_decay == TrainConfig().ema_decay


def test_given_flags_reach_their_fields():
    args = cli.build_parser("compare").parse_args(["compare", "-n", "7", "--samplers", "ddim,dpmpp", "--steps", "5,10",
                                                   "--dataset-option", "mixture=ring8", "--quick", "--no-progress",
                                                   "--checkpoint", "m.pt", "--reference", "gmm"])
    s = from_args(CompareSettings, args)
    assert (s.n, s.samplers, s.steps, s.dataset_options, s.quick, s.progress, str(s.checkpoint), s.dataset) == (
        7, ["ddim", "dpmpp"], [5, 10], {"mixture": "ring8"}, True, False, "m.pt", "gmm")
    args = cli.build_parser("sample").parse_args(["sample", "m.pt", "-o", "eta=0.5", "-o", "solver=heun2", "-n", "3"])
    s = from_args(SampleSettings, args)
    assert (s.checkpoint, s.options, s.n, s.out) == (Path("m.pt"), {"eta": 0.5, "solver": "heun2"}, 3,
                                                     SampleSettings().out)


@dataclass(frozen=True)
class _Toy:
    size: int = setting(3, "a size", short="-s", parse=count(1))
    name: str | None = setting(None, "a name (default: the size's)")
    fast: bool = setting(False, "go fast")
    progress: bool = setting(True, "no progress bar", flag="--no-progress")
    kv: dict = setting(help="k=v (repeatable)", factory=dict, flag="--kv", repeat=True, parse=parse_options)
    kind: str = setting("a", "a kind", choices=("a", "b"))
    hidden: int = setting(5, "not a flag", cli=False)


def test_a_parser_generated_from_a_dataclass():
    parser = argparse.ArgumentParser()
    add_arguments(parser, _Toy)
    assert from_args(_Toy, parser.parse_args([])) == _Toy()
    toy = from_args(_Toy, parser.parse_args(["-s", "4", "--name", "x", "--fast", "--no-progress", "--kv", "a=1",
                                             "--kv", "b=c", "--kind", "b"]))
    assert toy == _Toy(size=4, name="x", fast=True, progress=False, kv={"a": 1, "b": "c"}, kind="b")
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["size"] == "a size (default: 3)" and helps["name"] == "a name (default: the size's)"
    assert "hidden" not in helps and helps["kind"] == "a kind (default: a)"
    with pytest.raises(SystemExit):
        parser.parse_args(["-s", "0"])


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_takes_debug_and_threads_before_or_after_its_name(command):
    parser, required = cli.build_parser(command), REQUIRED.get(command, [])
    assert from_args(cli.ProcessSettings, parser.parse_args([command, *required])) == cli.ProcessSettings(False, "auto")
    for argv in (["--threads", "3", "--debug", command], [command, "--debug", "--threads", "3"]):
        assert from_args(cli.ProcessSettings, parser.parse_args(argv + required)) == cli.ProcessSettings(True, 3)


def test_threads_are_auto_or_a_positive_integer():
    assert (thread_count("auto"), thread_count("4")) == ("auto", 4)
    for text in ("0", "-1", "1.5", "x", "Auto"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"must be an integer >= 1 or auto; got {text!r}"):
            thread_count(text)

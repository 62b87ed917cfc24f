"""The ``scoregen`` command: each command's parser generated from its settings (``core.settings``), torchrun's
process group, and one policy for errors and exit statuses. What a command does is a library function of its
settings (``COMMANDS``); a command's settings, and the torch they import, are loaded only when it runs, so
that ``scoregen --help`` is instant.

A user error (a bad argument, a missing or unreadable file, a destination that cannot be written) is one
line on stderr, ``scoregen: error: <message>``, and exit status 2; a failure of the machine (a full disk)
or of the run (a diverged loss) is one line and status 1; Ctrl-C is one line and status 130. ``--debug``
(or ``SCOREGEN_DEBUG=1``) shows the full traceback instead, with the same status. Every destination is checked
before any work. Every command takes ``ProcessSettings``: ``--debug`` and ``--threads``, torch's CPU threads
while it runs (``auto_threads`` by default).
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from ..core.settings import add_arguments, from_args, given, setting, threads_setting

MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)  # OSErrors of the machine, not of the user's input

ABOUT = {  # command -> (its line in `scoregen --help`, its description)
    "train": ("train a model (eps U-Net by default) on a data set",
              "Train a model. Settings come from the defaults, then --config FILE, then (with --resume) the run's "
              "checkpoint, then the options given here."),
    "export": ("write a checkpoint's EMA weights and config alone (a shippable model)", None),
    "sample": ("draw samples from a model: an eps-network with any sampler, a VAE",
               "Sample a trained model (a scoregen checkpoint or a local diffusers folder): an eps-network with any "
               "sampler (at the t_min it was trained with), a VAE in one decoder call. Without a model, list the "
               "samplers, their options and the grids."),
    "tune-grid": ("tune a deterministic sampler's time grid to a checkpoint (a grid file)",
                  "Tune the K + 1 times of a deterministic sampler to a checkpoint: least end-point error against "
                  "the PF-ODE's own map of the same prior draws (scoregen.tune). Writes the grid with its errors on "
                  "the tuning draws and on fresh ones, beside every named grid's; `scoregen sample --grid FILE` "
                  "runs on it."),
    "tune": ("learn for a checkpoint a sampler's time grid (--learn grid) or a whole solver (--learn solver)",
             "Learn for a checkpoint what makes few network calls land where the PF-ODE lands: a sampler's grid "
             "(--learn grid, as tune-grid) or a solver's weights, grid and network times (--learn solver, "
             "scoregen.evaluation.tune_solver), measured on fresh draws beside every fixed solver; `scoregen "
             "sample --solver FILE` and `scoregen compare` run it."),
    "likelihood": ("bits/dim of held-out data: PF-ODE, DDPM bound, VAE ELBO and IWAE, and the VAE with a diffusion "
                   "prior",
                   "Bits/dim of the held-out split under the given models, one convention (scoregen.likelihood): a "
                   "table, and JSON with --out."),
    "compare": ("step count vs sample quality for every sampler and the VAE",
                "Sample one model with every sampler at several step counts (and the VAE at one NFE), measure each "
                "row against held-out data, write a table, a plot and sample grids. Missing models are trained once "
                "and cached."),
}
DISTRIBUTED = ("train", "sample", "compare", "likelihood")  # the commands that share their work under torchrun


@dataclass(frozen=True)
class ProcessSettings:
    """What every command takes, before or after its name: how errors are shown and torch's CPU threads."""
    debug: bool = setting(False, "show full tracebacks (also SCOREGEN_DEBUG=1)")
    threads: int | str = threads_setting()


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command(module: str, settings: str, function: str, show: str | None = None):
    """``(add, run)`` of a command whose logic is ``module.function(module.settings)``: ``add`` generates its
    parser from the settings, ``run`` builds them from the parsed flags, calls the function and prints
    ``module.show(result)`` when there is a result (rank 0 of a torchrun)."""
    def add(parser):
        add_arguments(parser, getattr(import_module(module, __package__), settings))

    def run(args):
        m = import_module(module, __package__)
        result = getattr(m, function)(from_args(getattr(m, settings), args))
        if show is not None and result is not None:
            print(getattr(m, show)(result), end="")
    return add, run


def _add_train(parser):
    from ..models.checkpoint import TrainConfig, TrainRun
    add_arguments(parser, TrainRun)
    add_arguments(parser, TrainConfig)


def _run_train(args):
    from ..models.checkpoint import TrainConfig, TrainRun
    from ..models.train import train

    run = from_args(TrainRun, args, fields=given(TrainConfig, args))
    config = run.train_config()
    result = train(config, resume=run.resume, progress=run.progress)
    loss = "n/a" if result.loss is None else f"{result.loss:.4f}"
    print(f"step {result.step}, loss {loss}; checkpoint {Path(config.out) / 'ckpt.pt'}")


COMMANDS = {"train": (_add_train, _run_train),
            "export": _command(".commands", "ExportSettings", "export"),
            "sample": _command(".commands", "SampleSettings", "sample"),
            "tune-grid": _command(".commands", "TuneGridSettings", "tune_grid"),
            "tune": _command(".commands", "TuneSettings", "tune"),
            "likelihood": _command("..evaluation.likelihood", "LikelihoodSettings", "table", "markdown_table"),
            "compare": _command("..evaluation.compare", "CompareSettings", "compare", "markdown_table")}


def build_parser(command: str | None = None) -> _Parser:
    """The parser of ``scoregen``; only ``command``'s options are generated (all of them for "all")."""
    parser = _Parser(prog="scoregen", description="Continuous-time diffusion models: train, sample, compare.")
    add_arguments(parser, ProcessSettings)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (add, _) in COMMANDS.items():
        p = sub.add_parser(name, help=ABOUT[name][0], description=ABOUT[name][1] or ABOUT[name][0])
        add_arguments(p, ProcessSettings)  # before or after the command
        if command in (name, "all"):
            add(p)
    return parser


def main(argv=None):
    """The ``scoregen`` command (see the module docstring for its errors and exit statuses).

    Under torchrun (RANK and WORLD_SIZE set) the commands of ``DISTRIBUTED`` join its process group first
    (``scoregen.runtime.distributed``); every rank prints its own errors, prefixed with its rank, and an error
    of another rank is reported by rank 0 alone."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(next((a for a in argv if a in COMMANDS), None)).parse_args(argv)
    process = from_args(ProcessSettings, args)
    debug = process.debug or os.environ.get("SCOREGEN_DEBUG", "") not in ("", "0")
    launched, done = args.command in DISTRIBUTED and "RANK" in os.environ and "WORLD_SIZE" in os.environ, False
    try:
        if launched:
            from ..runtime import distributed
            args.device = distributed.init(getattr(args, "device", None))
        with num_threads(process.threads):
            _run_reporting(args, debug)
        done = True
    finally:
        if launched:
            distributed.shutdown(wait=done)


def auto_threads() -> int:
    """``--threads auto``: torch's default where OMP_NUM_THREADS is set (torch reads it; torchrun sets it to 1 for
    each process unless given), else that default less the cores that the load average says other work keeps
    busy, at least 1."""
    import torch

    default = torch.get_num_threads()
    if "OMP_NUM_THREADS" in os.environ:
        return default
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(default, (os.cpu_count() or default) - busy))


@contextmanager
def num_threads(threads: int | str):
    """torch's intra-op CPU threads set to ``threads`` ("auto": ``auto_threads()``) for the block."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(auto_threads() if threads == "auto" else threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _run_reporting(args, debug: bool):
    """Run the command; a user error, a machine error, a diverged run or Ctrl-C ends it with its exit status
    (module docstring), shown as one line on stderr or, with ``debug``, as the full traceback."""
    rank = int(os.environ.get("RANK", 0)) if args.command in DISTRIBUTED else 0
    prefix = f"scoregen: rank {rank}: " if int(os.environ.get("WORLD_SIZE", 1)) > 1 else "scoregen: "

    def fail(status: int, message: str, show: bool = True):
        if show and debug:
            traceback.print_exc()
        elif show:
            print(prefix + message, file=sys.stderr)
        sys.exit(status)

    try:
        COMMANDS[args.command][1](args)
    except KeyboardInterrupt as e:  # training's Interrupted says where its checkpoint is; Ctrl-C says nothing
        fail(130, str(e) or "interrupted")
    except (ValueError, OSError, FloatingPointError) as e:
        # 2: the user's input (arguments, files, destinations; CheckpointError is a ValueError);
        # 1: the machine (a full disk, an I/O error) or the run (a diverged loss)
        machine = isinstance(e, FloatingPointError) or getattr(e, "errno", None) in MACHINE_ERRNOS
        fail(1 if machine else 2, f"error: {_message(e)}")
    except RuntimeError as e:  # another rank failed (RankError), or a collective broke (torch.distributed.DistError)
        from ..runtime.distributed import RankError, broken
        if not isinstance(e, RankError) and not broken(e):
            raise
        fail(1, f"error: {e}", show=rank == 0)


def _message(e: Exception) -> str:
    """The exception's message, without the ``[Errno N]`` that ``str`` puts before an OSError's own text."""
    return e.strerror if isinstance(e, OSError) and e.strerror and e.filename is None else str(e)

"""Many processes, one result: torch.distributed (torchrun) for the commands, never inside a sampler.

Under ``torchrun`` every process runs the same command. ``init`` joins torchrun's process group (gloo for
CPU tensors, NCCL for CUDA ones) and gives each process its device; ``rank`` and ``world_size`` say which
process this is; without torchrun they are 0 and 1 and nothing here communicates.

Work that draws random numbers is cut into fixed-size chunks: chunk k is seeded ``chunk_seed(seed, k)``
whatever the number of processes, rank r computes chunks r, r + W, r + 2W, ..., and ``map_chunks`` hands
every chunk's result, in chunk order, to rank 0. So a run's samples do not depend on the world size: they
are bit-identical on the CPU at the same thread count (torchrun sets one), and chunk 0 is seeded with
``seed`` itself, so a run of one chunk equals ``sg.sample`` with a generator seeded ``seed``.

A rank whose chunk raises tells the others at the next exchange: every rank stops, rank 0 with a
``RankError`` naming the rank and its error; a rank that dies (killed) breaks the exchange, and rank 0
says so. Rank 0 alone writes results, and only after the exchange, so a failed run writes no result file.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist

CHUNK = 500  # samples per chunk (per sampler call) unless a command is given its --batch-size


class RankError(RuntimeError):
    """Another process of a distributed run failed or stopped."""


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device=None):
    """Join the launcher's process group (once) and return the device this process should use: for a CUDA
    ``device`` without an index (or None on a GPU machine), ``cuda:LOCAL_RANK``; otherwise ``device``."""
    if not launched():
        return device
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda and (device is None or str(device) == "cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    return device


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that writes files and shows progress."""
    return rank() == 0


def barrier():
    if world_size() > 1:
        dist.barrier()


@contextmanager
def main_first():
    """Rank 0 runs the block first (training or tuning into a cache), the others after it (reading the cache)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def chunk_seed(seed: int, k: int) -> int:
    """The seed of chunk ``k``: ``seed`` itself for chunk 0, else a SeedSequence draw of (seed, k) (independent
    streams, the same for any world size)."""
    if k == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2 ** 64, k]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def chunk_generator(seed: int, k: int, device) -> torch.Generator:
    return torch.Generator(torch.device(device)).manual_seed(chunk_seed(seed, k))


def chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """``(start, size)`` of the chunks of ``n`` items, each ``chunk`` long but the last."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk (--batch-size) must be a positive integer; got {chunk!r}")
    return [(start, min(chunk, n - start)) for start in range(0, n, chunk)]


def _cpu(value):
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, (tuple, list)):
        return type(value)(_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    return value


def all_gather(value, what: str) -> list:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank: ``all_gather_object``,
    with a broken exchange (a rank killed, a lost connection) turned into a RankError naming ``what``."""
    if world_size() == 1:
        return [value]
    out = [None] * world_size()
    try:
        dist.all_gather_object(out, value)
    except RuntimeError as e:
        raise RankError(f"a process of the run stopped without reporting (killed, or its connection lost) while "
                        f"exchanging {what}; nothing was written ({type(e).__name__}: {e})") from None
    return out


def check_all(error: BaseException | None, what: str):
    """Every rank says whether its part of ``what`` failed; if one did, every rank raises: the failing one its
    own error, the others (rank 0's naming the failing rank and its error) a RankError."""
    if world_size() == 1:
        if error is not None:
            raise error
        return
    failures = [(r, msg) for r, msg in enumerate(all_gather(None if error is None else
                                                           f"{type(error).__name__}: {error}", what)) if msg]
    if error is not None:
        raise error
    if failures:
        r, msg = failures[0]
        raise RankError(f"rank {r} of {world_size()} failed while computing {what}: {msg}; nothing was written")


def map_chunks(fn, n: int, chunk: int, *, seed: int, device, what: str = "samples", progress: bool = False):
    """``fn(start, size, generator)`` for each chunk of ``n`` items (``chunks``) that is this rank's, the
    generator seeded ``chunk_seed(seed, k)`` on ``device``; returns every chunk's result, moved to the CPU,
    in chunk order, on rank 0, and None on the other ranks. ``what`` names the work in error messages."""
    from tqdm.auto import tqdm

    every = chunks(n, chunk)
    if is_main() and len(every) < world_size():
        warnings.warn(f"{n} {what} in chunks of {chunk} are {len(every)} chunks for {world_size()} processes: "
                      f"{world_size() - len(every)} will wait; give a smaller chunk (--batch-size)", stacklevel=2)
    parts, mine, error = {}, every[rank()::world_size()], None
    try:
        for i, (start, size) in enumerate(tqdm(mine, desc=what, leave=False, disable=not (progress and is_main()))):
            k = rank() + i * world_size()
            parts[k] = _cpu(fn(start, size, chunk_generator(seed, k, device)))
    except Exception as e:  # noqa: BLE001 - reported to every rank, then raised
        error = e
    check_all(error, what)
    if world_size() == 1:
        return [parts[k] for k in sorted(parts)]
    gathered = [None] * world_size() if is_main() else None
    try:
        dist.gather_object(parts, gathered, dst=0)
    except RuntimeError as e:
        raise RankError(f"a process of the run stopped while sending its {what}; nothing was written "
                        f"({type(e).__name__}: {e})") from None
    if not is_main():
        return None
    merged = {k: v for part in gathered for k, v in part.items()}
    return [merged[k] for k in sorted(merged)]


def sample(eps_model, sde, shape, method: str = "ddim", *, seed: int = 0, chunk: int = CHUNK,
           progress: bool = False, **options):
    """``sg.sample`` of ``shape[0]`` samples in chunks shared by the ranks (``map_chunks``): on rank 0 a
    ``SampleResult`` with every sample (on the CPU), ``nfe`` the mean over chunks (they differ only for
    adaptive solvers), the first chunk's options and the decoder calls of all chunks (a latent model's); None
    on the other ranks."""
    from ..samplers import SampleResult
    from ..samplers import sample as sample_one

    device = options.get("device") or (next(eps_model.parameters()).device
                                       if isinstance(eps_model, torch.nn.Module) else "cpu")
    parts = map_chunks(lambda start, size, g: sample_one(eps_model, sde, (size, *shape[1:]), method, generator=g,
                                                         **options),
                       shape[0], chunk, seed=seed, device=device, progress=progress)
    if parts is None:
        return None
    nfe = sum(p.nfe for p in parts) / len(parts)
    latents = None if parts[0].latents is None else torch.cat([p.latents for p in parts])
    return SampleResult(torch.cat([p.x for p in parts]), int(nfe) if nfe == int(nfe) else nfe, parts[0].options,
                        latents=latents, decoder_calls=sum(p.decoder_calls for p in parts))


def broken(error: BaseException) -> bool:
    """Whether ``error`` is torch.distributed's own: a collective that failed (a rank killed, a timeout)."""
    return isinstance(error, dist.DistError)


def shutdown(wait: bool = True):
    """Leave the process group (at the end of a command under torchrun); ``wait``: for every rank first (a
    rank that tears its connections down while another still sends would abort that one)."""
    if dist.is_available() and dist.is_initialized():
        if wait and world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()

"""Shared test set-up: one intra-op thread.

The tests run many tiny tensor ops, for which a thread pool costs more than it gives (and on a
busy 2-core machine far more); one thread also makes reductions reproducible run to run.
"""
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def floors():
    """The oracle's floors (``oracle.oracle_floors``), computed once per run."""
    from oracle import oracle_floors

    return oracle_floors()


@pytest.fixture
def full_disk_at(monkeypatch):
    """``full_disk_at(k)``: from now on, the k-th flush to disk (``os.fsync``) of ``runtime.outputs`` fails
    as a full disk does (ENOSPC); the others pass."""
    import errno
    import os

    from scoregen.runtime import outputs

    def arm(k: int):
        fsync, calls = os.fsync, []

        def fsync_or_full(fd):
            calls.append(fd)
            if len(calls) == k:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            fsync(fd)
        monkeypatch.setattr(outputs.os, "fsync", fsync_or_full)
    return arm

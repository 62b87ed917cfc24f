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

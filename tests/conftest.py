"""Shared test set-up: one intra-op thread.

The tests run many tiny tensor ops, for which a thread pool costs more than it gives (and on a
busy 2-core machine far more); one thread also makes reductions reproducible run to run.
"""
import torch

torch.set_num_threads(1)

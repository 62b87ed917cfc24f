"""Every phase longer than a few seconds shows a tqdm bar on stderr with ``progress=True`` and writes nothing
without: the feature network's training and the tuning's reference solves (before the tuning loop, and on the
held-out draws)."""
import re

import pytest
import torch

import scoregen as sg
from scoregen.data import Dataset
from scoregen.data.gmm import preset
from scoregen.evaluation.features import FeatureNet
from scoregen.evaluation.tune import held_out_errors, optimize_grid

SDE = sg.VPSDE()


class _Oracle(torch.nn.Module):
    """The mixture oracle's exact eps as an nn.Module (its calls are what the bars count)."""

    def __init__(self):
        super().__init__()
        self.eps = preset("gmm2d").eps_model(SDE)

    def forward(self, x, t):
        return self.eps(x, t)


def _calls(err: str, desc: str) -> int:
    """The last count of network calls that the bar ``desc`` showed."""
    counts = re.findall(rf"{re.escape(desc)}: (\d+)NFE", err)
    assert counts, err
    return int(counts[-1])


@pytest.mark.parametrize("progress", [True, False])
def test_the_feature_network_shows_its_training(tmp_path, capsys, progress):
    g = torch.Generator().manual_seed(0)
    x, labels = torch.rand(40, 1, 8, 8, generator=g) * 2 - 1, torch.randint(2, (40,), generator=g)
    data = Dataset("noise", x[:30], x[30:], labels_train=labels[:30], labels_test=labels[30:])
    FeatureNet.for_dataset(data, cache_dir=tmp_path, steps=5, batch_size=8, feature_dim=8, progress=progress)
    err = capsys.readouterr().err
    assert ("training the feature network" in err and "5/5" in err) if progress else err == "", err


@pytest.mark.parametrize("progress", [True, False])
def test_tuning_shows_its_reference_solves_and_tunes_the_same_grid(capsys, progress):
    """The PF-ODE reference (dopri5 at 1e-5: far more calls than the named grids' 4 x 4) on the tuning draws, before
    the loop, and on the held-out ones; the bars change no number."""
    eps, run = _Oracle(), dict(n=16, dtype=torch.float64)
    tuned = optimize_grid(eps, SDE, "ddim", 4, (2,), max_evals=3, progress=progress, **run)
    held = held_out_errors(eps, SDE, "ddim", tuned.t, (2,), seed=1, progress=progress, **run)
    err = capsys.readouterr().err
    if progress:
        assert _calls(err, "PF-ODE reference, seed 0") > 4 * 4 and _calls(err, "PF-ODE reference, seed 1") > 4 * 4
    else:
        assert err == ""
    plain = optimize_grid(eps.eps, SDE, "ddim", 4, (2,), max_evals=3, **run)
    assert torch.equal(tuned.t, plain.t) and tuned.error == plain.error
    assert held == held_out_errors(eps.eps, SDE, "ddim", plain.t, (2,), seed=1, **run)

"""``scoregen compare``: the gmm sweep end to end against the mixture oracle, and every bad input failing
before anything is sampled or written."""
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import scoregen.evaluation.compare.run as compare_module
from scoregen.models.checkpoint import TrainConfig, save_checkpoint
from scoregen.app.cli import main
from scoregen.evaluation.compare import CompareSettings, compare
from scoregen.data import load_dataset
from scoregen.evaluation.features import FeatureNet
from scoregen.evaluation.metrics import attribute_tv, frechet_distance
from scoregen.models.nets import build_model
from scoregen.core.sde import VPSDE


@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    """``scoregen compare --dataset gmm --quick`` with DDPM at 10 and 1000 steps; trains the MLP into a fresh cache."""
    root = tmp_path_factory.mktemp("compare")
    main(["compare", "--dataset", "gmm", "--quick", "--steps", "ddpm=10,1000", "--out", str(root / "out"),
          "--cache-dir", str(root / "cache"), "--no-progress"])
    return root / "out"


def test_gmm_quick_writes_every_file_and_row(gmm_run, capsys):
    files = {p.name for p in gmm_run.iterdir()}
    samplers = ("ddpm", "ddim", "sde", "ode-heun", "ode-dopri5", "dpmpp", "dpmpp-tuned", "unipc", "heun", "deis",
                "ipndm", "learned")  # no VAE
    assert files == {"compare.json", "compare.csv", "compare.md", "quality_vs_nfe.png"} | \
        {f"samples_{s}.png" for s in samplers}  # no temporary file left over
    summary = json.loads((gmm_run / "compare.json").read_text())
    rows = summary["rows"]
    assert [(r["sampler"], r["steps"], r["tol"]) for r in rows] == [
        ("data floor", None, None), ("ddpm", 10, None), ("ddpm", 1000, None), ("ddim", 10, None),
        ("ddim", 100, None), ("sde", 50, None), ("ode-heun", 10, None), ("ode-dopri5", None, 1e-3),
        ("dpmpp", 10, None), ("dpmpp-tuned", 10, None), ("unipc", 10, None), ("heun", 5, None), ("deis", 5, None),
        ("ipndm", 5, None), ("learned", 5, None)]
    assert summary["n"] == 400 and all(r["n"] == 400 for r in rows)
    # NFE as counted: one call per DDPM/DDIM step, Euler-Maruyama + final denoise, two per Heun step + 1
    nfe = {(r["sampler"], r["steps"]): r["nfe"] for r in rows}
    assert nfe["ddpm", 10] == 10 and nfe["ddpm", 1000] == 1000 and nfe["ddim", 100] == 100
    assert nfe["sde", 50] == 51 and nfe["ode-heun", 10] == 21 and nfe["ode-dopri5", None] > 10
    assert nfe["dpmpp", 10] == nfe["dpmpp-tuned", 10] == nfe["unipc", 10] == 10 and nfe["heun", 5] == 9
    assert nfe["deis", 5] == nfe["ipndm", 5] == nfe["learned", 5] == 5
    assert rows[-1]["options"] == {"fallback": "unipc", "grid": "uniform"}  # no solver learned for this MLP
    for r in rows:
        for key in ("swd", "mmd", "logp", "logp_gap", "moment_kl", "precision", "recall", "density", "coverage"):
            assert r[key + "_std"] > 0, (r["sampler"], key)
    ranking = summary["ranking"]
    assert ranking["metric"] == "swd" and ranking["reference"] == ranking["best"] and summary["halves"] == 50
    assert {r["vs"]["verdict"] for r in rows[1:]} <= {"reference", "tied", "worse"} and "vs" not in rows[0]
    assert sorted(ranking["tied"] + ranking["resolved"] + [ranking["best"]]) == sorted(
        f"{r['sampler']}@{r['steps'] if r['tol'] is None else format(r['tol'], 'g')}" for r in rows[1:])
    assert "What this run can and cannot tell apart" in (gmm_run / "compare.md").read_text()
    csv_lines = (gmm_run / "compare.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows) and csv_lines[0].startswith("sampler,method,options,steps,tol,nfe,n,swd")
    assert (gmm_run / "compare.md").read_text().count("\n| ") == len(rows) + 1


def test_repeats_give_the_spread_over_fresh_seeds(tmp_path):
    """--repeats 2: each row drawn from seeds 0 and 1; its rerun spread is the sd of the two runs' values."""
    path = _zero_unet(tmp_path / "ckpt.pt")
    run = lambda seed, repeats: compare(CompareSettings(  # noqa: E731
        "digits", checkpoint=path, samplers=["ddpm"], steps=[2], n=64, seed=seed, repeats=repeats,
        out=tmp_path / f"out{seed}{repeats}", cache_dir=tmp_path / "cache", progress=False))[1]
    both, first, second = run(0, 2), run(0, 1), run(1, 1)
    for key in ("fd", "kid", "precision", "attr_tv"):  # not fd_inf: it depends on the run's halves too
        assert both[key] == first[key]
        assert both[key + "_rerun_std"] == pytest.approx(abs(first[key] - second[key]) / math.sqrt(2), rel=1e-9)
    assert "fd_rerun_std" not in first


def test_ode_err_on_deterministic_rows_ranks_the_ode_solvers(gmm_run):
    """ode_err only where a sampler is a map of its prior draw; at 10 NFE the second-order exponential
    integrators beat DDIM, the tuned grid beats the uniform one; 100 DDIM steps and dopri5 at 1e-3 come closer."""
    summary = json.loads((gmm_run / "compare.json").read_text())
    by = {(r["sampler"], r["steps"]): r for r in summary["rows"]}
    assert {k for k, r in by.items() if "ode_err" in r} == {
        ("ddim", 10), ("ddim", 100), ("ode-heun", 10), ("ode-dopri5", None), ("dpmpp", 10), ("dpmpp-tuned", 10),
        ("unipc", 10), ("heun", 5), ("deis", 5), ("ipndm", 5), ("learned", 5)}
    assert summary["ode_reference"]["solver"] == "dopri5" and summary["ode_reference"]["tol"] == 1e-5
    err = {k: r["ode_err"] for k, r in by.items() if "ode_err" in r}
    assert max(err["ode-dopri5", None], err["ddim", 100]) < 0.2 * err["ddim", 10]
    assert max(err["dpmpp", 10], err["unipc", 10]) < 0.8 * err["ddim", 10]
    assert err["dpmpp-tuned", 10] < 0.5 * err["dpmpp", 10]
    assert by["dpmpp-tuned", 10]["options"]["grid"] == "tuned"


def test_gmm_quick_is_exact_where_it_can_be_and_ranks_sanely(gmm_run):
    rows = json.loads((gmm_run / "compare.json").read_text())["rows"]
    by = {(r["sampler"], r["steps"]): r for r in rows}
    oracle = load_dataset("gmm", n_train=2, n_test=2).oracle
    # E_p[log p] = -entropy: every row carries the same reference, and exact draws (the floor) match it
    entropy_mc = oracle.log_prob(oracle.sample(200_000, generator=torch.Generator().manual_seed(5))).mean()
    floor = by["data floor", None]
    assert all(r["logp_data"] == pytest.approx(float(entropy_mc), abs=0.01) for r in rows)
    assert abs(floor["logp_gap"]) < 4 * floor["logp_gap_std"] + 0.02
    # 1000 ancestral steps beat 10 on the exact metrics, by many spreads
    ddpm10, ddpm1000 = by["ddpm", 10], by["ddpm", 1000]
    for key in ("moment_kl", "mmd"):
        gap = ddpm10[key] - ddpm1000[key]
        assert gap > 3 * (ddpm10[key + "_std"] ** 2 + ddpm1000[key + "_std"] ** 2) ** 0.5, key
    assert ddpm1000["logp_gap"] < ddpm10["logp_gap"]
    assert ddpm1000["moment_kl"] < 4 * floor["moment_kl"] + 0.02


def _checkpoint(path, dataset="gmm", dim=2, **options):
    """An untrained MLP checkpoint labelled with ``dataset`` and its options."""
    config = TrainConfig(dataset=dataset, dataset_options=options, model={"arch": "mlp", "dim": dim, "hidden": 8,
                                                                          "depth": 1})
    save_checkpoint({"step": 0, "config": config.to_dict(), "ema": build_model(config.model).state_dict()}, path)
    return path


@pytest.mark.parametrize("kwargs, message", [
    (dict(samplers=["ddpm", "euler"]),
     "unknown sampler.*'euler'.*valid: ddpm, ddim, sde, ode-heun, ode-dopri5, dpmpp, dpmpp-tuned, unipc, heun, deis, "
     "ipndm, learned, vae"),
    (dict(dataset="mnist"), "unknown dataset 'mnist'.*valid: .*digits"),
    (dict(samplers=[]), "empty sweep"),
    (dict(steps={"ddpm": []}), "empty sweep: no step counts for 'ddpm'"),
    (dict(steps={"ode-dopri5": [2]}), "tolerances of 'ode-dopri5' must be numbers in \\(0, 1\\)"),
    (dict(steps=[10, 0]), "step counts of 'ddpm' must be positive integers"),
    (dict(steps={"sde": [10]}, samplers=["ddpm"]), "steps given for sampler.*'sde' not in the sweep"),
    (dict(samplers=["vae"]), "'vae' needs image data"),
    (dict(grid="cosine"), "unknown grid 'cosine'; valid: uniform"),
    (dict(n=3), "n must be an integer >= 4"),
    (dict(device="tpu"), "device must be"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path, kwargs, message):
    kwargs = {"dataset": "gmm", "out": tmp_path / "out", "cache_dir": tmp_path / "cache", "progress": False,
              "dataset_options": {"n_train": 100, "n_test": 100}, **kwargs}
    with pytest.raises(ValueError, match=message):
        compare(CompareSettings(**kwargs))
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # nothing trained either


@pytest.mark.parametrize("checkpoint, message", [
    (dict(dataset="toy"), "trained on data set 'toy', not 'gmm'"),
    (dict(mixture="ring8"), "trained on gmm-ring8 .*not gmm-gmm2d"),
    (dict(dim=3), r"does not fit samples of shape \(2,\)"),
])
def test_checkpoint_of_another_data_set_or_shape_is_refused(tmp_path, checkpoint, message):
    path = _checkpoint(tmp_path / "ckpt.pt", **checkpoint)
    with pytest.raises(ValueError, match=message):
        compare(CompareSettings("gmm", checkpoint=path, out=tmp_path / "out", cache_dir=tmp_path / "cache",
                                progress=False))
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_failure_mid_sweep_leaves_previous_results_untouched(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "compare.json").write_text("old")
    path = _checkpoint(tmp_path / "ckpt.pt")
    calls = []

    def failing_sample(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return sample(*args, **kwargs)

    sample = compare_module.sample
    monkeypatch.setattr(compare_module, "sample", failing_sample)
    with pytest.raises(KeyboardInterrupt):
        compare(CompareSettings("gmm", checkpoint=path, samplers=["ddpm"], steps=[2, 3], n=50, out=out,
                                progress=False))
    assert len(calls) == 2 and [p.name for p in out.iterdir()] == ["compare.json"]
    assert (out / "compare.json").read_text() == "old"


def test_a_second_run_into_the_same_folder_leaves_only_its_own_pictures(tmp_path):
    out, path = tmp_path / "out", _checkpoint(tmp_path / "ckpt.pt")
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # not a picture of compare's: kept
    run = dict(checkpoint=path, steps=[2], n=50, out=out, progress=False)
    compare(CompareSettings("gmm", samplers=["ddpm", "ddim"], **run))
    assert {p.name for p in out.glob("samples_*")} == {"samples_ddpm.png", "samples_ddim.png"}
    compare(CompareSettings("gmm", samplers=["ddim"], **run))
    assert {p.name for p in out.glob("samples_*")} == {"samples_ddim.png"}
    assert [r["sampler"] for r in json.loads((out / "compare.json").read_text())["rows"]] == ["data floor", "ddim"]
    assert (out / "notes.txt").read_text() == "mine"


def _zero_unet(path):
    """A digits U-Net checkpoint whose eps is 0: DDIM then returns x_1 / alpha(1) at any step count."""
    config = TrainConfig(dataset="digits", model={"arch": "unet", "in_channels": 1, "image_size": 8, "ch": 8,
                                                  "ch_mult": [1], "num_res_blocks": 1, "attn_resolutions": []})
    model = build_model(config.model)
    for p in model.parameters():
        p.data.zero_()
    return save_checkpoint({"step": 0, "config": config.to_dict(), "ema": model.state_dict()}, path)


def test_images_are_measured_as_clamped_pictures(tmp_path):
    """eps = 0 makes DDIM return x_1 / alpha(1) at any step count: a pixel is clipped iff |x_1| > (1 + 1/16) alpha(1),
    and after clamping both rows hold the same pictures, so the same Frechet distance."""
    path = _zero_unet(tmp_path / "ckpt.pt")
    rows = compare(CompareSettings("digits", checkpoint=path, samplers=["ddim"], steps=[1, 3], n=64,
                                   out=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False))
    floor, one, three = rows
    p = 1 - math.erf((1 + 1 / 16) * VPSDE().alpha(1.0).item() / math.sqrt(2))   # P(|z| > c), z ~ N(0, 1)
    assert one["clipped"] == three["clipped"] == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / 64 ** 2))
    assert "clipped" not in floor
    assert one["fd"] == pytest.approx(three["fd"], rel=1e-6) and one["fd"] > 5 * floor["fd"] > 0
    assert one["kid"] > floor["kid"] + 5 * one["kid_std"]
    # the same number by hand: the prior draws of seed 0, divided by alpha(1), clamped, in feature space
    x = torch.randn((64, 1, 8, 8), generator=torch.Generator().manual_seed(0)) / VPSDE().alpha(1.0).float()
    net = FeatureNet.for_dataset(load_dataset("digits"), cache_dir=tmp_path / "cache" / "features")
    assert one["fd"] == pytest.approx(frechet_distance(net.features(x.clamp(-1, 1)), net.reference), rel=1e-6)
    # the class frequencies the classifier predicts: noise is not spread over the ten digits as the data are
    assert one["attr_tv"] == pytest.approx(attribute_tv(net.predict(x.clamp(-1, 1)), net.predict(load_dataset(
        "digits").test), [10]), rel=1e-9) and one["attr_tv"] > floor["attr_tv"] + 5 * one["attr_tv_std"]
    assert list(one["attributes"]) == ["class"] and sum(one["attributes"]["class"]) == pytest.approx(1)
    header = (tmp_path / "out" / "compare.csv").read_text().splitlines()[0]
    assert header.endswith("fd,fd_std,fd_inf,fd_inf_std,kid,kid_std,precision,precision_std,recall,recall_std,density,"
                           "density_std,coverage,coverage_std,attr_tv,attr_tv_std,ode_err,ode_err_std,clipped,vs_diff,"
                           "vs_diff_std,vs_verdict,wall_s,device")
    # eps = 0: the PF-ODE is dx/dt = f, solved exactly by DDIM; dopri5 at 1e-5 meets it to its tolerance
    rms = x.pow(2).mean().sqrt().item()
    assert 0 < one["ode_err"] < 3e-5 * rms and one["ode_err"] == pytest.approx(three["ode_err"], rel=1e-3)


class _FakeInception(torch.nn.Module):
    """Stands in for inception-2015-12-05.pt (uint8 images at their own size): per-channel means and spreads."""

    def forward(self, x, return_features: bool = False):
        x = x.float()
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_inception_weights_on_disk_give_the_frechet_distance_in_their_space(tmp_path):
    from scoregen.evaluation.features import InceptionFeatures
    torch.jit.script(_FakeInception()).save(str(tmp_path / "inception.pt"))
    with pytest.raises(FileNotFoundError, match="inception_path"):
        compare(CompareSettings("digits", checkpoint=_zero_unet(tmp_path / "ckpt.pt"),
                                inception_path=tmp_path / "missing.pt", out=tmp_path / "out",
                                cache_dir=tmp_path / "cache", progress=False))
    assert not (tmp_path / "out").exists()
    rows = compare(CompareSettings("digits", checkpoint=tmp_path / "ckpt.pt", samplers=["ddim"], steps=[1], n=64,
                                   inception_path=tmp_path / "inception.pt", out=tmp_path / "out",
                                   cache_dir=tmp_path / "cache", progress=False))
    x = torch.randn((64, 1, 8, 8), generator=torch.Generator().manual_seed(0)) / VPSDE().alpha(1.0).float()
    fake = InceptionFeatures(tmp_path / "inception.pt")
    expected = frechet_distance(fake.features(x.clamp(-1, 1)), fake.features(load_dataset("digits").test))
    assert rows[1]["fd"] == pytest.approx(expected, rel=1e-6)
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["feature_net"]["kind"] == "inception"


def test_a_grid_file_runs_every_fixed_step_sampler_on_its_times(gmm_run, tmp_path):
    """--grid FILE: its K fixes every fixed-step row's steps; samplers that stop at t_min get its last time 0
    replaced by the model's t_min (then the final denoising call); step counts next to it are refused."""
    grid = tmp_path / "grid.json"
    grid.write_text("[1.0, 0.5, 0.1, 0.0]")
    settings = dict(dataset="gmm", samplers=["ddim", "ode-heun", "sde", "ode-dopri5"], grid=str(grid), n=50,
                    cache_dir=gmm_run.parent / "cache", progress=False)
    rows = compare(CompareSettings(**settings, out=tmp_path / "out"))
    by = {r["sampler"]: r for r in rows}
    assert [by[s]["steps"] for s in ("ddim", "ode-heun", "sde")] == [3, 3, 3]
    assert by["ddim"]["nfe"] == 3 and by["ode-heun"]["nfe"] == 2 * 3 + 1 and by["sde"]["nfe"] == 3 + 1
    # adaptive: its own tolerances, not the grid's steps
    assert [r["tol"] for r in rows if r["sampler"] == "ode-dopri5"] == [1e-2, 1e-3, 1e-4]
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["grid"] == [1.0, 0.5, 0.1, 0.0]
    with pytest.raises(ValueError, match=r"the grid file fixes the step count \(3\): give no step counts"):
        compare(CompareSettings(**settings, steps=[10], out=tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()


def test_the_plan_is_pure_and_gives_the_rows_of_small_settings(tmp_path, monkeypatch):
    """``plan`` needs no model, data or file: the rows, samples per row, kinds and folder from settings and facts."""
    from scoregen.evaluation.compare.plan import Facts, plan

    monkeypatch.chdir(tmp_path)
    vectors = Facts("gmm-gmm2d", (2,), is_image=False, n_train=10)
    p = plan(CompareSettings("gmm", samplers=["ddpm", "ode-dopri5", "dpmpp-tuned"], steps=[3, 7], quick=True), vectors)
    assert [(r.label, r.value, r.deterministic) for r in p.rows] == [
        ("ddpm", 3, False), ("ddpm", 7, False), ("ode-dopri5", 1e-3, True), ("dpmpp-tuned", 3, True),
        ("dpmpp-tuned", 7, True)]
    assert (p.n, p.kinds, str(p.out)) == (400, ("eps",), "results/gmm-gmm2d")
    # every sampler by default; the VAE row for images only, and not beside a model of another library
    default = plan(CompareSettings("gmm", out="o"), vectors)
    assert "vae" not in {r.label for r in default.rows} and default.n == 2000 and str(default.out) == "o"
    images = Facts("digits", (1, 8, 8), is_image=True, n_train=1000, grid_steps=4)
    p = plan(CompareSettings(tols=[1e-2], quick=True), images)
    assert [(r.label, r.value) for r in p.rows] == [
        ("ddpm", 4), ("ddim", 4), ("sde", 4), ("ode-heun", 4), ("ode-dopri5", 1e-2), ("dpmpp", 4),
        ("dpmpp-tuned", 4), ("unipc", 4), ("heun", 4), ("deis", 4), ("ipndm", 4), ("learned", 4), ("vae", 1)]
    assert p.kinds == ("eps", "vae") and p.n == 100
    foreign = plan(CompareSettings(samplers=None, steps=[2], n=8), replace(images, grid_steps=None, foreign=True))
    assert [r.label for r in foreign.rows][-1] == "learned" and foreign.kinds == ("eps",)
    with pytest.raises(ValueError, match="n must be at most 1000 for digits"):
        plan(CompareSettings(n=1001), images)
    assert list(tmp_path.iterdir()) == []


def test_compare_removes_only_the_pictures_its_previous_run_listed(tmp_path):
    """A picture of the user's own named samples_*.png stays; so does every picture beside a compare.json that lists
    no files (of a scoregen that did not list them)."""
    out, path = tmp_path / "out", _checkpoint(tmp_path / "ckpt.pt")
    out.mkdir()
    (out / "samples_final.png").write_bytes(b"mine")  # scoregen sample ... --out out/samples_final.png
    run = dict(checkpoint=path, steps=[2], n=50, out=out, progress=False)
    compare(CompareSettings("gmm", samplers=["ddpm", "ddim"], **run))
    summary = json.loads((out / "compare.json").read_text())
    assert summary["files"] == ["compare.csv", "compare.md", "quality_vs_nfe.png", "samples_ddpm.png",
                                "samples_ddim.png", "compare.json"]
    compare(CompareSettings("gmm", samplers=["ddim"], **run))
    assert {p.name for p in out.glob("samples_*")} == {"samples_ddim.png", "samples_final.png"}
    (out / "compare.json").write_text(json.dumps({**summary, "files": None}))
    (out / "samples_ddpm.png").write_bytes(b"mine too")
    compare(CompareSettings("gmm", samplers=["ddim"], **run))
    assert (out / "samples_final.png").read_bytes() == b"mine"
    assert (out / "samples_ddpm.png").read_bytes() == b"mine too"


def test_a_full_disk_while_writing_the_results_leaves_the_previous_ones_as_they_were(tmp_path, full_disk_at, capsys):
    """The new files are written beside the old ones first, and only then renamed into place: a full disk at the
    plot leaves the previous run's files, every one as it was, and the error is one line with status 1."""
    out, path = tmp_path / "out", _checkpoint(tmp_path / "ckpt.pt")
    compare(CompareSettings("gmm", checkpoint=path, samplers=["ddpm", "ddim"], steps=[2], n=50, out=out,
                            progress=False))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    full_disk_at(3)
    with pytest.raises(SystemExit) as exit:
        main(["compare", "--dataset", "gmm", "--model", str(path), "--samplers", "ddim", "--steps", "3", "-n", "60",
              "--device", "cpu", "--out", str(out), "--no-progress"])
    assert exit.value.code == 1
    assert capsys.readouterr().err == (f"scoregen: error: cannot write {out / 'quality_vs_nfe.png'}: No space left on "
                                       f"device; the previous files in {out} were left unchanged\n")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_reference_statistics_are_written_and_measured_against(tmp_path):
    """--save-ref-stats writes the held-out features' mu and sigma; --ref-stats of that file gives the same fd,
    and statistics of another feature space are refused before any sample is drawn."""
    path = _zero_unet(tmp_path / "ckpt.pt")
    settings = CompareSettings("digits", checkpoint=path, samplers=["ddim"], steps=[3], n=64, out=tmp_path / "a",
                               cache_dir=tmp_path / "cache", progress=False, save_ref_stats=tmp_path / "ref.npz")
    plain = compare(settings)
    stats = np.load(tmp_path / "ref.npz")
    net = FeatureNet.for_dataset(load_dataset("digits"), cache_dir=tmp_path / "cache" / "features")
    assert stats["mu"] == pytest.approx(net.reference.double().mean(0).numpy(), abs=1e-12)
    again = compare(replace(settings, out=tmp_path / "b", save_ref_stats=None, ref_stats=tmp_path / "ref.npz"))
    assert [r["fd"] for r in again] == pytest.approx([r["fd"] for r in plain], rel=1e-9)
    np.savez(tmp_path / "small.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match="ref_stats have dimension 3; the features measured here have 128"):
        compare(replace(settings, out=tmp_path / "c", save_ref_stats=None, ref_stats=tmp_path / "small.npz"))
    assert not (tmp_path / "c").exists()

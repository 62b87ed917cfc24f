"""Bring your own model: a diffusers folder loaded by ``sg.load_model`` runs every sampler exactly as diffusers'
own schedulers do; ``sg.wrap`` turns v-, x0- and score-networks on any time variable (EDM's denoisers too) into
the same eps-model; the CLI takes ``--model`` and ``--reference``. Tiny random networks, built and saved here."""
import json
import logging

import numpy as np
import pytest
import torch

import scoregen as sg
from scoregen.samplers import reference
from scoregen.models.adapters import PREDICTIONS, TIMES
from scoregen.app.cli import main
from scoregen.models.nets import build_model
from tests.oracle import F64, GMM, SDE, gen

diffusers = pytest.importorskip("diffusers")
N = 1000
SHAPE = (2, 3, 8, 8)
VPSDE_DISCRETE = sg.VPSDE.from_ddpm_betas(torch.linspace(1e-4, 0.02, N, dtype=F64))


def tiny_unet(out_channels=3, seed=0, **config):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=out_channels, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                                 attention_head_dim=4, **config).eval()


def save_pipeline(root, unet=None, **scheduler):
    """A DDPMPipeline folder (model_index.json, unet/, scheduler/) of ``unet`` and a DDPMScheduler."""
    sched = diffusers.DDPMScheduler(num_train_timesteps=N, clip_sample=False, **scheduler)
    diffusers.DDPMPipeline(unet=unet or tiny_unet(), scheduler=sched).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {"epsilon": save_pipeline(root / "eps"),
            "v_prediction": save_pipeline(root / "v", prediction_type="v_prediction"),
            "sample": save_pipeline(root / "x0", prediction_type="sample", beta_schedule="squaredcos_cap_v2")}


def unet_of(folder):
    return diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()


def x_t(seed=1):
    return torch.randn(SHAPE, generator=gen(seed))


def test_eps_at_the_knots_is_the_unet_at_integer_timesteps(folders):
    """t = (k + 1) / N, as Model.eps gives it (float32), calls the UNet at the integer timestep k."""
    eps_model, sde, info = sg.load_model(folders["epsilon"], device="cpu")
    unet, x = unet_of(folders["epsilon"]), x_t()
    assert (info.format, info.shape, info.t_min, sde.num_steps) == ("diffusers", (3, 8, 8), 1 / N, N)
    with torch.no_grad():
        for k in (0, 1, 250, 499, 998, 999):
            t = torch.full((2,), (k + 1) / N, dtype=torch.float32)
            want = unet(x, torch.full((2,), k)).sample
            assert (eps_model(x, t) - want).abs().max() <= 1e-6, k


def test_between_the_knots_the_unet_gets_the_fractional_timestep_and_the_schedule_matches(folders):
    eps_model, sde, _ = sg.load_model(folders["epsilon"], device="cpu")
    unet, x = unet_of(folders["epsilon"]), x_t()
    with torch.no_grad():
        for k in (0.25, 10.5, 700.75):
            got = eps_model(x, torch.full((2,), (k + 1) / N))
            assert (got - unet(x, torch.full((2,), k)).sample).abs().max() <= 1e-5, k
            assert (got - unet(x, torch.full((2,), round(k))).sample).abs().max() > 1e-5, "k was rounded"
    ac = diffusers.DDPMScheduler.from_pretrained(folders["epsilon"] / "scheduler").alphas_cumprod.double()
    knots = torch.arange(1, N + 1, dtype=F64) / N
    assert torch.allclose(sde.alpha(knots) ** 2, ac, rtol=1e-12, atol=0)


def diffusers_loop(sched, unet, x1, generator=None):
    """diffusers' own sampling loop from x1."""
    x = x1.clone()
    with torch.no_grad():
        for k in sched.timesteps:
            x = sched.step(unet(x, k).sample, k, x, generator=generator).prev_sample
    return x


def in_dtype(folder, sched, dtype):
    """Our eps-model, the UNet and the scheduler's tables in ``dtype``. diffusers keeps its tables in float32 and
    computes 1 - alpha_t there (beta_1 = 1e-4 to 4 digits); in float64 the two loops must agree to round-off."""
    eps_model, sde, _ = sg.load_model(folder, device="cpu")
    for name in ("betas", "alphas", "alphas_cumprod", "final_alpha_cumprod"):
        if hasattr(sched, name):
            setattr(sched, name, torch.as_tensor(getattr(sched, name)).to(dtype))
    return eps_model.to(dtype), sde, unet_of(folder).to(dtype)


def rel_err(got, want):
    return ((got - want).abs().max() / want.abs().max()).item()


TOL = {torch.float64: 1e-10, torch.float32: 3e-5}  # relative to the samples' scale (a random UNet's: ~100)


@pytest.mark.parametrize("prediction, dtype", [("epsilon", F64), ("v_prediction", F64), ("epsilon", torch.float32)])
def test_ancestral_ddpm_1000_steps_equals_the_ddpm_scheduler_fed_the_same_noise(folders, prediction, dtype):
    sched = diffusers.DDPMScheduler.from_pretrained(folders[prediction] / "scheduler")
    sched.set_timesteps(N)
    eps_model, sde, unet = in_dtype(folders[prediction], sched, dtype)
    g = gen(3)
    x1 = torch.randn(SHAPE, generator=g, dtype=dtype)  # then one draw per step, as our ddpm draws them
    want = diffusers_loop(sched, unet, x1, generator=g)
    got = sg.sample(eps_model, sde, SHAPE, "ddpm", N, generator=gen(3)).x
    assert rel_err(got, want) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing, steps, offset, alpha_one", [("leading", 10, 0, True), ("leading", 20, 1, False),
                                                               ("trailing", 10, 0, True), ("trailing", 25, 0, False)])
def test_ddim_on_the_schedulers_own_timesteps_equals_the_ddim_scheduler(folders, prediction, spacing, steps, offset,
                                                                      alpha_one, dtype):
    folder = folders[prediction]
    sched = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler", timestep_spacing=spacing, steps_offset=offset,
                                                    set_alpha_to_one=alpha_one)
    sched.set_timesteps(steps)
    t = reference.grid(sched)
    assert len(t) == steps + 1 and t[-1] == (0.0 if alpha_one else 1 / N)
    eps_model, sde, unet = in_dtype(folder, sched, dtype)
    x1 = torch.randn(SHAPE, generator=gen(4), dtype=dtype)
    want = diffusers_loop(sched, unet, x1)
    got = sg.sample(eps_model, sde, SHAPE, "ddim", grid=t, x1=x1).x
    # an x0-network's eps = (x - alpha x0) / sigma divides float32's rounding by sigma (0.01 at t = 1 / N)
    assert rel_err(got, want) <= TOL[dtype] * (10 if prediction == "sample" and dtype == torch.float32 else 1)


def test_a_scheduler_whose_steps_do_not_chain_is_refused_by_grid():
    sched = diffusers.DDIMScheduler(num_train_timesteps=N, timestep_spacing="trailing")
    sched.set_timesteps(7)  # 999, 856, ... each step goes to k - 142: not the next timestep
    with pytest.raises(ValueError, match="steps do not chain"):
        reference.grid(sched)


def test_a_learned_variance_half_is_dropped(tmp_path):
    unet = tiny_unet(out_channels=6)
    folder = save_pipeline(tmp_path / "p", unet=unet, variance_type="learned_range")
    eps_model, _, info = sg.load_model(folder, device="cpu")
    x, t = x_t(), torch.full((2,), 0.5)
    with torch.no_grad():
        assert torch.allclose(eps_model(x, t), unet(x, torch.full((2,), 499)).sample[:, :3], atol=1e-6)
    assert info.details["variance_type"] == "learned_range"


def test_a_bare_unet_folder_with_its_scheduler_config_beside_it_loads(tmp_path, folders):
    unet_of(folders["epsilon"]).save_pretrained(tmp_path)
    diffusers.DDPMScheduler(num_train_timesteps=N).save_pretrained(tmp_path)  # scheduler_config.json beside
    eps_model, sde, info = sg.load_model(tmp_path, device="cpu")
    ref, _, _ = sg.load_model(folders["epsilon"], device="cpu")
    x, t = x_t(), torch.full((2,), 0.3)
    with torch.no_grad():
        assert torch.equal(eps_model(x, t), ref(x, t))


def test_bin_weights_load_without_diffusers_note_on_unsafe_serialisation(tmp_path, folders):
    """diffusers reads .bin weights with torch.load(weights_only=True); its fallback note is not shown."""
    unet_of(folders["epsilon"]).save_pretrained(tmp_path / "unet", safe_serialization=False)
    diffusers.DDPMScheduler(num_train_timesteps=N).save_pretrained(tmp_path / "scheduler")
    records, handler, logger = [], logging.Handler(logging.WARNING), logging.getLogger("diffusers")
    handler.emit = records.append  # diffusers' loggers do not propagate to caplog's
    logger.addHandler(handler)
    try:
        eps_model, _, _ = sg.load_model(tmp_path, device="cpu")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []
    ref, _, _ = sg.load_model(folders["epsilon"], device="cpu")
    x, t = x_t(), torch.full((2,), 0.3)
    with torch.no_grad():
        assert torch.equal(eps_model(x, t), ref(x, t))


# --- sg.wrap: every parameterisation and time variable gives the same eps -----------------------------------------
def network(prediction, time, sde, n=N):
    """The exact eps of the gmm2d mixture as a network predicting ``prediction`` on ``time`` (adapters docstring)."""
    def fn(x_in, tau):
        t = {"t": tau, "index": (tau + 1) / n, "log_snr": sde.t_from_log_snr(tau),
             "sigma": sde.t_from_log_snr(-torch.log(tau))}[time]
        alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        x = x_in * alpha if time == "sigma" else x_in
        a, s = (torch.ones_like(alpha), sigma / alpha) if time == "sigma" else (alpha, sigma)
        eps = GMM.eps(x, t, sde)
        x0 = (x_in - s * eps) / a
        return {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s}[prediction]
    return fn


@pytest.mark.parametrize("time", TIMES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_wrap_turns_every_parameterisation_into_the_same_eps(prediction, time):
    sde = SDE if time != "index" else VPSDE_DISCRETE
    eps_model = sg.wrap(network(prediction, time, sde), sde, prediction=prediction, time=time)
    x = GMM.sample(64, generator=gen(5))
    for t in (2e-3, 0.1, 0.5, 0.999):
        tt = torch.full((64,), t, dtype=F64)
        assert torch.allclose(eps_model(x, tt), GMM.eps(x, tt, sde), rtol=1e-9, atol=1e-9), t



def test_an_edm_denoiser_wrapped_samples_as_the_eps_network_it_was_built_from():
    """D(x, sigma) = x - sigma eps(alpha x, t(sigma)) in VE coordinates (EDM, Karras et al. 2022)."""
    torch.manual_seed(0)
    net = build_model({"arch": "unet", "in_channels": 1, "image_size": 8, "ch": 16, "ch_mult": (1, 2),
                       "num_res_blocks": 1, "attn_resolutions": (4,), "dropout": 0.0}).double().eval()
    net.conv_out.reset_parameters()  # eps != 0

    def denoiser(x_ve, sigma_ve):
        t = SDE.t_from_log_snr(-torch.log(sigma_ve))
        return x_ve - sigma_ve[:, None, None, None] * net(x_ve * SDE.alpha(t)[:, None, None, None], t)

    edm = sg.wrap(denoiser, SDE, prediction="x0", time="sigma")
    x1 = torch.randn((4, 1, 8, 8), generator=gen(6), dtype=F64)
    for method, steps in (("heun", 5), ("dpmpp", 10), ("ddim", 10)):
        want = sg.sample(net, SDE, x1.shape, method, steps, x1=x1).x
        got = sg.sample(edm, SDE, x1.shape, method, steps, x1=x1, device="cpu", dtype=F64).x
        assert (got - want).abs().max() <= 1e-9, method


def test_a_wrapped_network_loads_with_its_sde():
    fn = network("v", "index", VPSDE_DISCRETE)
    eps_model, sde, info = sg.load_model(sg.wrap(fn, VPSDE_DISCRETE, prediction="v", time="index"))
    assert sde is VPSDE_DISCRETE and (info.format, info.t_min, info.shape) == ("callable", 1 / N, None)


@pytest.mark.parametrize("kwargs, message", [
    (dict(prediction="noise"), "prediction must be one of 'eps', 'v', 'x0', 'score'; got 'noise'"),
    (dict(time="timestep"), "time must be one of 't', 'index', 'log_snr', 'sigma'; got 'timestep'"),
    (dict(time="index"), "time='index' needs num_steps"),
    (dict(time="t", num_steps=10), "num_steps belongs to time='index'"),
])
def test_wrap_refuses_what_it_cannot_convert(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sg.wrap(lambda x, t: x, SDE, **kwargs)


# --- what is not a model we can run: clear errors that say what was found ----------------------------------------
def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def broken(root, what):
    if what == "no unet":
        write_json(root / "scheduler" / "scheduler_config.json", {"_class_name": "DDPMScheduler"})
    elif what == "no scheduler":
        tiny_unet().save_pretrained(root / "unet")
    elif what == "ve scheduler":
        tiny_unet().save_pretrained(root / "unet")
        write_json(root / "scheduler" / "scheduler_config.json", {"_class_name": "ScoreSdeVeScheduler"})
    elif what == "prediction":
        save_pipeline(root, prediction_type="flow")
    elif what == "conditional":
        write_json(root / "unet" / "config.json", {"_class_name": "UNet2DConditionModel"})
        write_json(root / "scheduler" / "scheduler_config.json", {"_class_name": "DDPMScheduler"})
    elif what == "class labels":
        save_pipeline(root, unet=tiny_unet(num_class_embeds=10))
    elif what == "latent":
        save_pipeline(root)
        index = json.loads((root / "model_index.json").read_text())
        write_json(root / "model_index.json", {**index, "vqvae": ["diffusers", "VQModel"]})
    elif what == "channels":
        save_pipeline(root, unet=tiny_unet(out_channels=6))
    elif what in SCHEDULER_FIELDS:
        save_pipeline(root)
        config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
        write_json(root / "scheduler" / "scheduler_config.json", {**config, **SCHEDULER_FIELDS[what]})
    return root


SCHEDULER_FIELDS = {"timesteps": {"num_train_timesteps": "abc"}, "one timestep": {"num_train_timesteps": 1},
                    "beta": {"beta_end": 1.5}, "trained betas": {"trained_betas": [0.1, "x"]},
                    "schedule": {"beta_schedule": "foo"}, "zero snr": {"rescale_betas_zero_snr": True}}


@pytest.mark.parametrize("what, error, message", [
    ("missing", FileNotFoundError, "no model at .*missing: give a scoregen checkpoint or a local diffusers folder "
                                   r"\(nothing is downloaded"),
    ("no unet", ValueError, r"not a diffusers folder: it holds no UNet.*\(found: scheduler/\)"),
    ("no scheduler", ValueError, r"holds no scheduler config .*\(found: unet/\)"),
    ("ve scheduler", ValueError, "scheduler 'ScoreSdeVeScheduler' is not supported; scoregen needs a DDPM-family"),
    ("prediction", ValueError, "prediction_type 'flow' is not supported; supported: epsilon, v_prediction, sample"),
    ("conditional", ValueError, r"holds UNet2DConditionModel \(a conditional UNet\)"),
    ("class labels", ValueError, "the UNet2DModel is class-conditional \\(num_class_embeds=10"),
    ("latent", ValueError, r"is a pipeline with vqvae \(model_index.json\): a latent or conditional pipeline"),
    ("channels", ValueError, "the UNet maps 3 channels to 6; it must return 3 .*the scheduler's is 'fixed_small'"),
    ("timesteps", ValueError, "scheduler_config.json: field 'num_train_timesteps' must be an integer; got 'abc'"),
    ("one timestep", ValueError, r"scheduler_config.json: field num_train_timesteps must be a number in \(1, inf\); "
                                 "got 1"),
    ("beta", ValueError, r"scheduler_config.json: field beta_end must be a number in \(0.0, 1.0\); got 1.5"),
    ("trained betas", ValueError, r"scheduler_config.json: field trained_betas\[1\] must be a number in"),
    ("schedule", ValueError, "scheduler_config.json: DDPMScheduler refuses this config: foo is not implemented"),
    ("zero snr", ValueError, r"scheduler_config.json: the scheduler's alphas_cumprod give betas outside \(0, 1\)"),
])
def test_what_cannot_be_run_is_a_clear_error(tmp_path, what, error, message):
    root = tmp_path / "missing" if what == "missing" else broken(tmp_path / "model", what)
    with pytest.raises(error, match=message):
        sg.load_model(root, device="cpu")


# --- the commands -------------------------------------------------------------------------------------------------
def test_sample_takes_a_diffusers_folder_a_grid_file_and_bf16(folders, tmp_path, capsys):
    folder = folders["epsilon"]
    sched = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler", clip_sample=False)
    sched.set_timesteps(10)
    (tmp_path / "grid.json").write_text(json.dumps(reference.grid(sched).tolist()))
    runs = {}
    for name, extra in (("fp32", []), ("bf16", ["--dtype", "bf16"])):
        out = tmp_path / f"{name}.npz"
        main(["sample", "--model", str(folder), "--method", "ddim", "--grid", str(tmp_path / "grid.json"), "-n", "2",
              "--seed", "4", "--device", "cpu", "--out", str(out), *extra])
        assert "2 samples by ddim (10 NFE)" in capsys.readouterr().out
        runs[name] = torch.from_numpy(np.load(out)["x"])
    want = diffusers_loop(sched, unet_of(folder), torch.randn(SHAPE, generator=gen(4)))
    assert rel_err(runs["fp32"], want) <= TOL[torch.float32]
    assert 1e-4 < rel_err(runs["bf16"], runs["fp32"]) < 0.1  # computed in bf16, not silently in fp32


def test_compare_runs_end_to_end_on_a_saved_pipeline_and_an_npz_reference(folders, tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, size=(200, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", x=images)
    out = tmp_path / "out"
    main(["compare", "--model", str(folders["epsilon"]), "--reference", str(tmp_path / "ref.npz"), "--quick",
          "--samplers", "ddim,dpmpp,ode-heun", "--device", "cpu", "--out", str(out), "--cache-dir", str(tmp_path),
          "--no-progress"])
    table = capsys.readouterr().out
    assert "| ddim " in table and "| dpmpp " in table
    summary = json.loads((out / "compare.json").read_text())
    assert summary["model"]["format"] == "diffusers" and summary["checkpoint"] == str(folders["epsilon"])
    assert summary["dataset"] == "npz-ref" and summary["n"] == 100
    assert [r["sampler"] for r in summary["rows"]] == ["data floor", "ddim", "ddim", "dpmpp", "ode-heun"]
    assert all(r["fd"] > 0 and r["ode_err"] > 0 for r in summary["rows"][1:])
    for name in ("compare.csv", "compare.md", "quality_vs_nfe.png", "samples_ddim.png"):
        assert (out / name).is_file()


def test_compare_leaves_the_vae_out_for_a_model_of_another_library_and_says_what_features_it_used(
        folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sg.compare, "SWEEPS", {k: sg.compare.SWEEPS[k] for k in ("ddim", "vae")})  # the default sweep
    images = np.random.default_rng(1).integers(0, 256, size=(60, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", x=images)
    rows = sg.compare.compare(sg.compare.CompareSettings(
        str(tmp_path / "ref.npz"), checkpoint=folders["epsilon"], steps=[3], n=20, out=tmp_path / "out",
        cache_dir=tmp_path, device="cpu"))
    assert [r["sampler"] for r in rows] == ["data floor", "ddim"]
    note = "fd and kid are measured in the features of a network trained on npz-ref (random), not Inception's"
    assert note in capsys.readouterr().err and note in (tmp_path / "out" / "compare.md").read_text()


def test_a_reference_folder_is_resized_to_the_models_size_and_a_path_is_not_a_name(tmp_path):
    from scoregen.data import dataset_source

    assert dataset_source(str(tmp_path), {}, size=8) == ("folder", {"path": str(tmp_path), "size": 8})
    assert dataset_source(str(tmp_path), {"size": 16}, size=8) == ("folder", {"path": str(tmp_path), "size": 16})
    np.savez(tmp_path / "ref.npz", x=np.zeros((4, 8, 8), dtype=np.uint8))
    assert dataset_source(str(tmp_path / "ref.npz"), {}, size=8) == ("npz", {"path": str(tmp_path / "ref.npz")})
    assert dataset_source("digits", {}, size=8) == ("digits", {})
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; valid: .*, or an image folder or .npz file"):
        dataset_source("cifar", {})


def test_a_folders_digest_keys_its_cache_on_its_files(folders, tmp_path):
    import shutil

    info = sg.load_model(folders["epsilon"], device="cpu").info
    copy = shutil.copytree(folders["epsilon"], tmp_path / "copy")
    assert sg.load_model(copy, device="cpu").info.digest() == info.digest()
    config = json.loads((copy / "scheduler" / "scheduler_config.json").read_text())
    (copy / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "beta_end": 0.03}))
    assert sg.load_model(copy, device="cpu").info.digest() != info.digest()

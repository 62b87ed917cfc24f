"""The VAE against diffusion on the 8x8 digits: one network call per sample against many, in one table.

    python examples/vae_vs_diffusion.py                  # trains a digits VAE (minutes on a CPU), cached in runs/
    python examples/vae_vs_diffusion.py --n 2000 --k 1000

Both models come out of the same training loop (``scoregen train``; the VAE is ``--model vae``). The DDPM is
the shipped ``scoregen/checkpoints/digits.pt`` when present, else trained here from ``configs/digits.json``;
trained models are cached under ``--runs``. Prints, per model and sampler, the network calls per sample
(NFE), bits/dim on the held-out split and the Frechet distance / KID in the digits classifier's feature
space (``scoregen.metrics``; the "real data" row is the floor at the same n); writes the sample grids to
docs/figures/vae_vs_diffusion.png.

Bits/dim follow the package convention, and both are upper bounds on the discrete -log2 P(x) of the
17-level data: the VAE's ELBO / IWAE with its discretised-Gaussian decoder, the DDPM bound with its
discretised decoder. Neither needs a dequantisation term, so the two are comparable.
"""
import argparse
import json
import time
from pathlib import Path

import torch

import scoregen as sg
from scoregen.models.checkpoint import TrainConfig, load_checkpoint
from scoregen.evaluation.likelihood import bits_per_dim, ddpm_bound
from scoregen.evaluation.features import FeatureNet
from scoregen.evaluation.metrics import floor, sample_metrics
from scoregen.runtime.outputs import tile
from scoregen.models.train import train

ROOT = Path(__file__).resolve().parents[1]


def trained(config: TrainConfig):
    """(model, sde) of ``config``'s run: the EMA weights, trained first unless the run's checkpoint exists."""
    ckpt = Path(config.out) / "ckpt.pt"
    if not ckpt.exists():
        print(f"training {config.model} for {config.steps} steps into {config.out}")
        train(config)
    return load_checkpoint(ckpt)[:2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae-steps", type=int, default=6000, help="VAE training steps (Adam 1e-3, batch 64)")
    parser.add_argument("--n", type=int, default=1000, help="samples per row for the metrics")
    parser.add_argument("--k", type=int, default=100, help="importance samples of the IWAE bound")
    parser.add_argument("--ddim-steps", type=int, nargs="+", default=[10, 50], help="DDIM rows: steps of each")
    parser.add_argument("--ddpm-steps", type=int, default=1000, help="ancestral DDPM row: steps (0: no row)")
    parser.add_argument("--bound-steps", type=int, default=100,
                        help="DDPM bound: steps sampled per image (of 1000; importance-weighted, unbiased)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="where trained models are cached")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "vae_vs_diffusion.png")
    args = parser.parse_args()
    data = sg.load_dataset("digits")

    vae, _ = trained(TrainConfig(dataset="digits", model={"arch": "vae", "preset": "digits"}, steps=args.vae_steps,
                                 batch_size=64, lr=1e-3, warmup=1, grad_clip=0.0, sample_every=0, ckpt_every=0,
                                 out=str(args.runs / "vae_digits")))
    shipped = ROOT / "scoregen" / "checkpoints" / "digits.pt"
    if shipped.exists():
        ddpm, sde = load_checkpoint(shipped)[:2]
    else:
        print(f"no shipped DDPM at {shipped}: using configs/digits.json's run")
        config = json.loads((ROOT / "configs" / "digits.json").read_text())
        ddpm, sde = trained(TrainConfig.from_dict({**config, "sample_every": 0, "out": str(args.runs / "digits")}))

    x_test, g = data.test, torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbo = bits_per_dim(vae.elbo(x_test, generator=g), vae.dim).mean().item()
        iwae = bits_per_dim(vae.iwae(x_test, args.k, generator=g), vae.dim).mean().item()
    bound = ddpm_bound(ddpm, sde, x_test, levels=data.levels, sample_steps=args.bound_steps, generator=g)
    vae_bpd = f"{elbo:.3f} (ELBO), {iwae:.3f} (IWAE k={args.k})"
    ddpm_bpd = f"{bound.bpd.mean().item():.3f} (bound)"

    def draw(model, method=None, steps=None, mean=True):
        g = torch.Generator().manual_seed(1)
        if method is None:  # the VAE samples in one decoder call: a model kind, not a VP-SDE sampler
            return model.sample(args.n, generator=g, mean=mean), 1
        res = sg.sample(model, sde, (args.n,) + data.shape, method, steps, generator=g)
        return res.x, res.nfe

    rows = [("VAE", "decoder mean", dict(model=vae), vae_bpd),
            ("VAE", "decoder draw", dict(model=vae, mean=False), vae_bpd),
            *[("DDPM", f"DDIM {k} steps", dict(model=ddpm, method="ddim", steps=k), ddpm_bpd) for k in args.ddim_steps],
            *[("DDPM", f"ancestral {k} steps", dict(model=ddpm, method="ddpm", steps=k), ddpm_bpd)
              for k in [args.ddpm_steps] if k]]
    features = FeatureNet.for_dataset(data)
    real = floor(lambda x: sample_metrics(x, data, extractor=features), data, args.n,
                 generator=torch.Generator().manual_seed(0))
    print(f"\ndigits, held-out n = {len(x_test)}; metrics on n = {args.n} samples, digits-classifier features\n")
    print("| model | sampler | NFE | bits/dim (held-out) | FD | KID x 1e3 | sampling s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| real data | (training split) | - | - | {real['fd']:.2f} | {1e3 * real['kid']:.2f} | - |")
    panels = [("real data", data.train)]
    for model_name, sampler, how, bpd in rows:
        start = time.perf_counter()
        with torch.no_grad():
            x, nfe = draw(**how)
        seconds = time.perf_counter() - start
        m = sample_metrics(x, data, extractor=features)
        print(f"| {model_name} | {sampler} | {nfe} | {bpd} | {m['fd']:.2f} | {1e3 * m['kid']:.2f} | {seconds:.1f} |")
        panels.append((f"{model_name}, {sampler} (NFE {nfe})", x))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.8))
    for ax, (title, x) in zip(axes, panels):
        ax.imshow(tile(x[:36], 6)[..., 0], cmap="gray", vmin=-1, vmax=1)
        ax.set_title(title.replace(" (", "\n("), fontsize=8)
        ax.axis("off")
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=120, bbox_inches="tight")
    print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()

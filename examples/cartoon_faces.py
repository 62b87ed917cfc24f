"""Cartoon faces, the seed's pipeline on a CPU: the VAE alone against diffusion in its latent space, in pictures.

    python examples/cartoon_faces.py                                   # the shipped models, under a minute
    python examples/cartoon_faces.py --model runs/cartoon-latent/ckpt.pt --method dpmpp --steps 20

Draws ``--n`` faces four ways: the data (training items), the VAE's reconstructions of them (the decoder mean at
the posterior mean: the best its decoder can do, the latent model's floor), the VAE's prior (one decoder call on
z ~ N(0, I)) and the latent diffusion model (``--method`` on the VAE's standardised codes, then one decoder call).
Measures each with the faces' feature network (the one ``scoregen compare`` uses, cached): FD to the held-out
split and the predicted frequencies of the 14 attributes; writes to ``--out`` (default docs/figures/):
``cartoon_latent.png`` (the four side by side), ``cartoon_attributes.png`` (each attribute's frequencies against
the held-out data's) and ``cartoon_attributes.json`` (every number printed, the frequencies, the classifier's
held-out accuracy per attribute).
"""
import argparse
import json
from pathlib import Path

import torch

import scoregen as sg
from scoregen.data.cartoon import ATTRIBUTES
from scoregen.evaluation.features import FeatureNet
from scoregen.evaluation.metrics import attribute_tv, frechet_distance, label_frequencies
from scoregen.models.zoo import shipped_checkpoint
from scoregen.runtime.outputs import tile, write_atomic

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=shipped_checkpoint("cartoon.pt"),
                        help="a latent diffusion checkpoint on cartoon faces (default: the shipped one)")
    parser.add_argument("--method", default="ddpm", help="its sampler (default: ddpm)")
    parser.add_argument("--steps", type=int, default=1000, help="its steps (default: 1000)")
    parser.add_argument("--n", type=int, default=2000, help="faces per row for the frequencies (default: 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args()
    loaded = sg.load_model(args.model, device="cpu")
    model, sde, info = loaded
    if loaded.kind != "latent":
        raise SystemExit(f"--model {args.model} is not a latent diffusion model (scoregen train --vae)")
    data = sg.load_dataset(info.config.dataset, **info.config.dataset_options)
    net = FeatureNet.for_dataset(data)
    g = torch.Generator().manual_seed(args.seed)
    items = data.train[torch.randperm(data.train.shape[0], generator=g)[:args.n]]
    rows = {
        "data": items,
        "VAE reconstruction": model.vae.decode(model.vae.encode(items)[0]).clamp(-1, 1),
        "VAE prior": model.vae.sample(args.n, generator=g).clamp(-1, 1),
        "latent diffusion": sg.sample(model, sde, (args.n, *model.shape), args.method, args.steps, t_min=info.t_min,
                                      generator=g).x.clamp(-1, 1),
    }
    classes = net.config["num_classes"]
    reference = net.predict(data.test)
    freqs = {name: label_frequencies(net.predict(x), classes) for name, x in rows.items()}
    held_out = label_frequencies(reference, classes)
    summary = {"model": str(args.model), "sampler": f"{args.method} {args.steps} steps", "n": args.n,
               "classifier_accuracy": dict(zip(ATTRIBUTES, net.info["column_accuracy"])),
               "fd": {name: frechet_distance(net.features(x), net.reference) for name, x in rows.items()},
               "attr_tv": {name: attribute_tv(net.predict(x), reference, classes) for name, x in rows.items()},
               "attributes": {a: {"values": list(values), "held-out data": held_out[j],
                                  **{name: f[j] for name, f in freqs.items()}}
                              for j, (a, values) in enumerate(ATTRIBUTES.items())}}

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.9))
    for ax, (name, x) in zip(axes, rows.items()):
        ax.imshow(((tile(x[:36], 6) + 1) / 2).numpy())
        ax.set_title(f"{name}\nFD {summary['fd'][name]:.2f}, attribute TV {summary['attr_tv'][name]:.3f}", fontsize=9)
        ax.axis("off")
    fig.savefig(args.out / "cartoon_latent.png", dpi=110, bbox_inches="tight")

    fig, axes = plt.subplots(2, 7, figsize=(17, 5))
    for ax, (a, entry) in zip(axes.flat, summary["attributes"].items()):
        k = len(entry["values"])
        for i, name in enumerate(["held-out data", "VAE reconstruction", "VAE prior", "latent diffusion"]):
            ax.bar([c + (i - 1.5) * 0.2 for c in range(k)], entry[name], width=0.2, label=name)
        ax.set_xticks(range(k), entry["values"], rotation=60, fontsize=7)
        ax.set_title(a, fontsize=9)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"predicted attribute frequencies, n = {args.n} faces each", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out / "cartoon_attributes.png", dpi=100)
    write_atomic(args.out / "cartoon_attributes.json", json.dumps(summary, indent=1).encode() + b"\n")
    for name, tv in summary["attr_tv"].items():
        print(f"{name:>18}: FD {summary['fd'][name]:.2f}, attribute TV {tv:.4f} (to the held-out split)")
    print(f"wrote cartoon_latent.png, cartoon_attributes.png, cartoon_attributes.json to {args.out}")


if __name__ == "__main__":
    main()

"""Bits/dim of the held-out digits under the diffusion model and the VAE, one convention for all rows.

    python examples/likelihood.py                                   # shipped digits model, no VAE
    python examples/likelihood.py --vae-ckpt runs/vae_digits/ckpt.pt --probes 4 --sample-steps 0

First a sanity row on the 'gmm2d' oracle (exact eps): the PF-ODE log-likelihood against the mixture's
exact log-density. Then the digits (17 levels, D = 64): the PF-ODE likelihood of uniformly dequantised
images (Hutchinson), the DDPM variational bound with its discretised decoder (K = 1000 steps), and
the VAE's ELBO / IWAE. Every row is an upper bound on the discrete -log2 P(x) / D (module docstring
of ``scoregen.likelihood``), given as mean ± standard error over the test images.
"""
import argparse
import json
import math
from pathlib import Path

import torch

import scoregen as sg
from scoregen.data import preset
from scoregen.evaluation.likelihood import bits_per_dim, likelihood_table, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, default=ROOT / "scoregen" / "checkpoints" / "digits.pt")
    parser.add_argument("--vae-ckpt", type=Path, help="a VAE checkpoint (scoregen train --model vae)")
    parser.add_argument("--n", type=int, default=None, help="test images (default: all 359)")
    parser.add_argument("--probes", type=int, default=2, help="Hutchinson probes per image")
    parser.add_argument("--t-min", type=float, default=sg.T_MIN, help="PF-ODE start time (the model's training t_min)")
    parser.add_argument("--sample-steps", type=int, default=100,
                        help="DDPM bound: steps importance-sampled per image (0: all 1000)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 4))

    mix, sde = preset("gmm2d"), sg.VPSDE()
    x = mix.sample(500, generator=torch.Generator().manual_seed(0))
    ll = sg.log_likelihood(mix.eps_model(sde), sde, x)
    exact, ode = bits_per_dim(mix.log_prob(x), 2), bits_per_dim(ll.logp, 2)
    print(f"gmm2d oracle, bits/dim of the density: exact {exact.mean():.4f}, PF-ODE {ode.mean():.4f} "
          f"(max |error| {(ode - exact).abs().max():.1e}, {ll.nfe} NFE)\n")

    data = sg.load_dataset("digits")
    model, sde, _ = sg.load_checkpoint(args.ckpt)
    vae = sg.load_checkpoint(args.vae_ckpt)[0] if args.vae_ckpt else None
    rows = likelihood_table(data.test[:args.n], levels=data.levels, eps_model=model, sde=sde, vae=vae,
                            probes=args.probes, t_min=args.t_min, sample_steps=args.sample_steps or None,
                            generator=torch.Generator(next(model.parameters()).device).manual_seed(0))
    print(markdown_table(rows))
    print(f"uniform over the 17 levels: {math.log2(17):.3f} bits/dim")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

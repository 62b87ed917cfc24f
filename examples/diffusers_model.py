"""A model of another library, end to end: train a diffusers ``UNet2DModel`` on the digits the diffusers way
(its ``DDPMScheduler``, cosine betas, v-prediction), save it as a ``DDPMPipeline`` folder, then load it with
``sg.load_model`` and sample it with scoregen's samplers, beside diffusers' own DDIM loop.

    pip install -e ".[diffusers]"
    python examples/diffusers_model.py --out runs/diffusers-digits        # about 3 min on 2 CPU cores
    scoregen compare --model runs/diffusers-digits --reference digits --samplers ddim,dpmpp,unipc,heun,ode-dopri5

Nothing here is scoregen's but the last step: the folder is what ``save_pretrained`` writes for any diffusers model.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import scoregen as sg
from scoregen.samplers import reference


def train(steps: int, batch_size: int, seed: int):
    """A UNet2DModel trained as diffusers' examples train one: x_k = add_noise(x0, eps, k), target the velocity."""
    import diffusers

    torch.manual_seed(seed)
    data = sg.load_dataset("digits").train
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                    prediction_type="v_prediction", clip_sample=False)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    lr = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    for _ in tqdm(range(steps), desc="train"):
        x0 = data[torch.randint(len(data), (batch_size,))]
        noise, k = torch.randn_like(x0), torch.randint(1000, (batch_size,))
        loss = (unet(sched.add_noise(x0, noise, k), k).sample - sched.get_velocity(x0, noise, k)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
    return diffusers.DDPMPipeline(unet=unet.eval(), scheduler=sched), loss.item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/diffusers-digits"), help="the pipeline folder to write")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import diffusers

    start = time.perf_counter()
    pipe, loss = train(args.steps, args.batch_size, args.seed)
    pipe.save_pretrained(args.out)
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s (last loss {loss:.4f}) -> {args.out}")

    eps_model, sde, info = sg.load_model(args.out, device="cpu")
    print(f"loaded: {info.details['prediction_type']} -> eps, {info.details['beta_schedule']} betas as {sde!r}")
    ddim = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    ddim.set_timesteps(20)
    x1 = torch.randn((256, *info.shape), generator=torch.Generator().manual_seed(args.seed))
    ours = sg.sample(eps_model, sde, x1.shape, "ddim", grid=reference.grid(ddim), x1=x1).x
    x = x1.clone()
    with torch.no_grad():
        for k in ddim.timesteps:
            x = ddim.step(pipe.unet(x, k).sample, k, x).prev_sample
    print(f"DDIM, 20 steps on diffusers' timesteps: max |scoregen - diffusers| = {(ours - x).abs().max():.2e}")


if __name__ == "__main__":
    main()

""" Pretraining step cost: MAE (pixel) vs parallel (MultiMAE) vs cascade (C2FMAE) decoders

One run, same encoder (ViT-B/16 at 224 by default), same batch, for each mode:
- FLOPs of one forward+backward step (torch.utils.flop_counter.FlopCounterMode; matmul / conv /
  attention FLOPs, elementwise ops not counted);
- wall time of forward+backward (median of `--iters` steps after `--warmup`, modes interleaved);
- the share of the step spent in `C2FMAE.prepare` (batch checks, instance relabelling, region
  majority, strategy draw, masking, target preparation).
Time and FLOP ratios are reported against MAE mode. Results go to benchmarks/README.md.

    python benchmarks/pretrain_step.py                      # 2-core CPU: batch 4, 3 iterations
    python benchmarks/pretrain_step.py --device cuda --batch-size 64 --amp   # GPU (bf16 autocast)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import c2fmae  # noqa: F401  (registers the timm encoders)
from c2fmae.models.c2fmae import C2FMAE, C2FMAEConfig

MODES = {
    "mae": dict(inputs=["rgb"], targets=["rgb"], decoder="pixel", schedule="fixed", fixed_probs=[0, 0, 1]),
    "parallel": dict(decoder="parallel"),
    "cascade": dict(decoder="cascade"),
}


def make_batch(batch_size: int, img_size: int, num_classes: int, device: str, seed: int = 0) -> dict:
    """ Synthetic batch in the TEAM.md layout: blocky class and instance maps at stride 4. """
    g = torch.Generator().manual_seed(seed)
    s = img_size // 4
    blocks = lambda hi: torch.randint(0, hi, (batch_size, s // 8, s // 8), generator=g).repeat_interleave(  # noqa: E731
        8, 1).repeat_interleave(8, 2)
    batch = {"image": torch.randn(batch_size, 3, img_size, img_size, generator=g),
             "semantic": blocks(num_classes), "instance": blocks(30) * 17}
    return {k: v.to(device) for k, v in batch.items()}


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_step(name: str, args, batch: dict):
    """ Model of one mode and a closure running one timed forward+backward step -> (prepare s, step s). """
    cfg = C2FMAEConfig(encoder=args.encoder, **MODES[name])
    model = C2FMAE(cfg).to(args.device).train()
    amp = (torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16) if args.amp
           else contextlib.nullcontext())

    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        with amp:  # the body of C2FMAE.forward, with a clock after `prepare`
            prep = model.prepare(batch, args.progress)
            _sync(args.device)
            t1 = time.perf_counter()
            latent = model.forward_encoder(model.embed_inputs(batch, prep), prep["ids_keep"])
            preds = model.decoder(latent, prep["ids_keep"], prep["ids_restore"])
            loss = model.forward_loss(preds, prep)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)
        _sync(args.device)
        return t1 - t0, time.perf_counter() - t0

    return model, step


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def run(args, batch: dict) -> list[dict]:
    """ FLOPs per mode, then the modes' steps interleaved (round robin) so that load drift on a shared
    machine hits every mode alike; medians over `iters`. """
    modes = args.modes.split(",")
    built = {m: build_step(m, args, batch) for m in modes}
    rows = {}
    for m, (model, step) in built.items():
        with FlopCounterMode(display=False) as fc:
            step()
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows[m] = dict(mode=m, gflops=fc.get_total_flops() / 1e9, params_m=params / 1e6,
                       visible=model.num_visible, times=[])
    for _ in range(args.warmup):
        for _, step in built.values():
            step()
    for _ in tqdm(range(args.iters), desc="steps (all modes)"):
        for m, (_, step) in built.items():
            rows[m]["times"].append(step())
    for r in rows.values():
        r["prep_s"] = _median([t[0] for t in r["times"]])
        r["step_s"] = _median([t[1] for t in r["times"]])
        r["prep_share"] = _median([t[0] / t[1] for t in r.pop("times")])
    return list(rows.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", default="c2fmae_vit_base_patch16_224")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--progress", type=float, default=0.3, help="curriculum t (0.3: semantic + instance guided)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--modes", default="mae,parallel,cascade")
    p.add_argument("--json", action="store_true", help="print one JSON line per mode")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = make_batch(args.batch_size, 224 if "224" in args.encoder else 64, 133, args.device)
    print(f"# {args.encoder}, batch {args.batch_size}, {args.iters} iters after {args.warmup} warmup, "
          f"device {args.device}{' bf16' if args.amp else ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    rows = run(args, batch)
    base = next((r for r in rows if r["mode"] == "mae"), rows[0])
    print("| mode | visible | params (M) | GFLOPs/step | step (s) | FLOP ratio | time ratio | time/FLOP ratio "
          "| masking+targets |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fr, tr = r["gflops"] / base["gflops"], r["step_s"] / base["step_s"]
        r.update(flop_ratio=fr, time_ratio=tr)
        print(f"| {r['mode']} | {r['visible']} | {r['params_m']:.1f} | {r['gflops']:.1f} | {r['step_s']:.3f} | "
              f"{fr:.2f} | {tr:.2f} | {tr / fr:.2f} | {100 * r['prep_share']:.2f}% ({1000 * r['prep_s']:.1f} ms) |")
        if args.json:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

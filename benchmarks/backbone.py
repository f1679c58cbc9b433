""" C2FMAEViT backbone: forward+backward time and peak memory, windowed vs global attention

    python benchmarks/backbone.py                         # ViT-B, det 1024 + seg 512, CPU (or cuda if present)
    python benchmarks/backbone.py --model c2fmae_vit_test --det-size 256 --seg-size 128   # quick smoke run

Each setting runs in a fresh subprocess so that the CPU peak (ru_maxrss) is its own; on CUDA the peak is
`torch.cuda.max_memory_allocated`. Reported memory is the peak minus the memory after building the model
(i.e. activations + gradients + workspace). Needs the mm extra (`bash tools/install_mm.sh`).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time


def _run(setting: dict, q) -> None:
    import torch

    import c2fmae.mm  # noqa: F401
    from c2fmae.mm import C2FMAEViT

    torch.manual_seed(0)
    dev = torch.device(setting["device"])
    m = C2FMAEViT(setting["model"], window_size=setting["window"], global_indices=setting["global_indices"],
                  out_indices=setting["out_indices"], with_cp=setting["with_cp"]).to(dev).train()
    x = torch.randn(setting["batch"], 3, setting["size"], setting["size"], device=dev)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        with amp:
            out = m(x)
        sum(o.float().square().mean() for o in out).backward()
        m.zero_grad(set_to_none=True)

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for i in range(setting["warmup"] + setting["iters"]):
        t0 = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= setting["warmup"]:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    q.put(dict(setting, time_s=sum(times) / len(times), peak_mib=(peak - base) / 2**20))


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="c2fmae_vit_base")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--det-size", type=int, default=1024)
    p.add_argument("--seg-size", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--with-cp", action="store_true", help="gradient checkpointing")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    import timm

    import c2fmae  # noqa: F401

    depth = len(timm.create_model(args.model, pretrained=False).blocks)
    g = tuple(range(depth // 4 - 1, depth, max(depth // 4, 1)))
    outs = {"det": (depth - 1,), "seg": tuple(sorted({depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1}))}
    settings = [
        dict(task=task, size=size, attention=att, window=14 if att == "windowed" else 0,
             global_indices=g if att == "windowed" else (), out_indices=outs[task])
        for task, size in (("det", args.det_size), ("seg", args.seg_size)) for att in ("windowed", "global")
    ]
    ctx = mp.get_context("spawn")
    rows = []
    from tqdm import tqdm

    for s in tqdm(settings, desc="backbone benchmark"):
        s.update(model=args.model, device=device, batch=args.batch, iters=args.iters, warmup=args.warmup,
                 with_cp=args.with_cp)
        q = ctx.Queue()
        proc = ctx.Process(target=_run, args=(s, q))
        proc.start()
        row = q.get()
        proc.join()
        rows.append(row)
    env = f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
    print(f"\n{args.model}, batch {args.batch}, {args.iters} timed iteration(s) after {args.warmup} warm-up; {env}")
    print("| task | input | attention | fwd+bwd s/iter | peak extra MiB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['size']}x{r['size']} | {r['attention']} | {r['time_s']:.2f} | {r['peak_mib']:.0f} |")
    for task in ("det", "seg"):
        w, gl = (next(r for r in rows if r["task"] == task and r["attention"] == a) for a in ("windowed", "global"))
        print(f"{task}: global / windowed time {gl['time_s'] / w['time_s']:.2f}x, "
              f"memory {gl['peak_mib'] / max(w['peak_mib'], 1e-9):.2f}x")
    if args.json:  # written atomically
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(tmp, args.json)
    return rows


if __name__ == "__main__":
    main()

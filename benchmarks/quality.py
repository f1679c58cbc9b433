"""Representation quality at equal budget: MAE vs MultiMAE vs C2FMAE, plus the paper's ablations.

Every method is pretrained with the real training engine (`c2fmae.train.train`) from the same seed,
with the same encoder, data, batch size and number of optimizer steps, on synthetic scenes; then the
frozen encoder is probed on a held-out split (the synthetic `val` stream, never seen in pretraining):
k-NN (DINO, k=20, T=0.07) and linear accuracy on the 5 scene labels, and the linear segmentation
probe's mIoU on the 10 semantic classes. Several pretraining seeds give mean and spread.

    python benchmarks/quality.py --fresh                          # the recorded run (56 min, busy 2-core CPU)
    python benchmarks/quality.py --methods mae_eqflops            # + MAE at c2fmae's FLOPs, same JSON
    python benchmarks/quality.py --seeds 0 --steps 20 --out /tmp/q.json --fresh   # smoke run (~3 min)

Methods (C2FMAEConfig fields; everything else identical):
    mae              inputs=[rgb], targets=[rgb], decoder=pixel (MAE), random masking (75%)
    multimae         all inputs/targets, decoder=parallel, fixed random masking (MultiMAE)
    c2fmae           all inputs/targets, decoder=cascade, curriculum (linear schedule)
    c2fmae_parallel  ablation: parallel decoder instead of the cascade
    c2fmae_random    ablation: fixed random masking instead of the curriculum
    c2fmae_rgb       ablation: RGB-only input (sem / ins remain targets; masking still region-guided)
    random_init      reference: the same encoder, not pretrained
    mae_eqflops      optional (--methods mae_eqflops): MAE trained for as many FLOPs as c2fmae, i.e.
                     steps x GFLOPs(c2fmae) / GFLOPs(mae) steps (same batch; the same lr schedule shape)

Results (raw per-seed JSON, the table, a bar plot) go to benchmarks/results/; finished (method, seed)
pairs are kept in the JSON, so a killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import c2fmae  # noqa: F401  (registers the encoders)
from c2fmae.eval import load_encoder, run_probes, write_json

RESULTS = Path(__file__).resolve().parent / "results"

METHODS: dict[str, list[str]] = {
    "mae": [
        "model.inputs=[rgb]",
        "model.targets=[rgb]",
        "model.decoder=pixel",
        "model.schedule=fixed",
    ],
    "multimae": ["model.decoder=parallel", "model.schedule=fixed"],
    "c2fmae": ["model.decoder=cascade", "model.schedule=linear"],
    "c2fmae_parallel": ["model.decoder=parallel", "model.schedule=linear"],
    "c2fmae_random": ["model.decoder=cascade", "model.schedule=fixed"],
    "c2fmae_rgb": ["model.inputs=[rgb]", "model.decoder=cascade", "model.schedule=linear"],
}
REFERENCE = "random_init"
EQUAL_FLOPS = "mae_eqflops"  # MAE at c2fmae's FLOP budget (more steps); not part of the default run
METRICS = (
    ("knn", "top1", "k-NN top-1 (scene)"),
    ("linear", "top1", "linear top-1 (scene)"),
    ("seg", "miou", "seg-probe mIoU"),
)


def common_overrides(a: argparse.Namespace, work: Path, method: str, seed: int) -> list[str]:
    """Identical for every method: encoder, data, optimiser, steps, seed; no viz, export to the run dir."""
    enc = (
        f"{{img_size: {a.img_size}, patch_size: {a.patch}, embed_dim: {a.dim}, depth: {a.depth}, num_heads: {a.heads}}}"
    )
    return [
        "model.encoder=c2fmae_vit_test",
        f"model.encoder_kwargs={enc}",
        "model.num_classes=10",
        f"model.decoder_dim={a.decoder_dim}",
        f"model.decoder_depth={a.decoder_depth}",
        "model.decoder_heads=2",
        f"model.pixel_decoder_dim={a.decoder_dim}",
        f"model.pixel_decoder_depth={a.decoder_depth + 1}",
        "model.pixel_decoder_heads=2",
        "data.source=synthetic",
        f"data.img_size={a.img_size}",
        f"data.num_samples={a.pretrain_samples}",
        "data.seed=0",
        f"batch_size={a.batch_size}",
        f"steps={a.steps}",
        f"seed={seed}",
        f"optim.lr={a.lr}",
        f"optim.warmup_epochs={a.warmup_steps / (a.pretrain_samples // a.batch_size)}",
        "device=cpu",
        "precision=fp32",
        f"num_workers={a.workers}",
        f"num_threads={a.threads}",
        f"output_dir={work}",
        f"name={method}-s{seed}",
        "resume=auto",
        f"ckpt_every={a.steps}",
        "keep_last=1",
        f"log_every={max(1, a.steps // 10)}",
        "viz_samples=0",
        "export=true",
    ]


def equal_flops_steps(a: argparse.Namespace, gflops: dict[str, float]) -> int:
    """MAE steps that cost as many FLOPs as `a.steps` steps of c2fmae."""
    return round(a.steps * gflops["c2fmae"] / gflops["mae"])


def method_overrides(a: argparse.Namespace, method: str, gflops: dict[str, float]) -> list[str]:
    """The config overrides that make `method` (on top of `common_overrides`)."""
    if method != EQUAL_FLOPS:
        return METHODS[method]
    n = equal_flops_steps(a, gflops)
    return [*METHODS["mae"], f"steps={n}", f"ckpt_every={n}", f"log_every={max(1, n // 10)}"]


def pretrain(
    a: argparse.Namespace, work: Path, method: str, seed: int, gflops: dict[str, float]
) -> tuple[torch.nn.Module, float]:
    """Pretrain `method` with the training engine; returns the exported encoder and the seconds per step.

    Seconds per step come from the run's `metrics.jsonl` timestamps (first to last log line), so they
    exclude start-up, checkpointing and export.
    """
    from c2fmae.train import load_config, train

    cfg = load_config(None, common_overrides(a, work, method, seed) + method_overrides(a, method, gflops))
    run_dir = train(cfg)
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    s_per_step = (logs[-1]["time"] - logs[0]["time"]) / max(1, logs[-1]["step"] - logs[0]["step"])
    return load_encoder(str(run_dir / "export")), s_per_step


def step_gflops(a: argparse.Namespace, method: str) -> float:
    """Forward + backward GFLOPs of one optimizer step of `method` (torch's FLOP counter, one batch).

    Averaged over curriculum progress 0, 0.5 and 1 (the masking strategy can change the token count).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from c2fmae.data import build_dataset
    from c2fmae.models.c2fmae import C2FMAE
    from c2fmae.train import load_config

    cfg = load_config(None, common_overrides(a, Path(tempfile.gettempdir()), method, 0) + METHODS[method])
    torch.manual_seed(0)
    model = C2FMAE(cfg.model)
    ds = build_dataset(cfg.data, train=True)
    batch = torch.utils.data.default_collate([ds[i] for i in range(a.batch_size)])
    total = 0.0
    for progress in (0.0, 0.5, 1.0):
        with FlopCounterMode(display=False) as counter:
            model(batch, progress=progress)["loss"].backward()
        total += counter.get_total_flops()
        model.zero_grad(set_to_none=True)
    return total / 3 / 1e9


def eval_splits(a: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Probe train split (synthetic `train` stream, eval view) and held-out split (`val` stream), in memory."""
    from c2fmae.eval import eval_datasets

    print(f"probe data: {a.probe_train} train / {a.probe_val} held-out synthetic scenes at {a.img_size}px", flush=True)
    train, val = eval_datasets(
        "synthetic", img_size=a.img_size, num_samples=a.probe_train, val_samples=a.probe_val, seed=0
    )
    return [train[i] for i in range(len(train))], [val[i] for i in range(len(val))]


def summarize(
    results: dict[str, dict[str, dict]], methods: list[str], gflops: dict[str, float], steps: int
) -> list[dict]:
    """Per method and metric: mean, sample std and the per-seed values (in %); cost per step."""
    rows = []
    for m in methods:
        runs = results.get(m, {})
        if not runs:
            continue
        row = {"method": m, "seeds": sorted(int(s) for s in runs)}
        for probe, key, _ in METRICS:
            vals = [100 * r[probe][key] for r in runs.values()]
            row[probe] = {
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "values": vals,
            }
        row["pretrain_s"] = statistics.fmean(r.get("pretrain_s", 0.0) for r in runs.values())
        row["s_per_step"] = statistics.fmean(r.get("s_per_step", 0.0) for r in runs.values())
        row["gflops_per_step"] = gflops.get(m, 0.0)
        row["steps"] = max(r.get("steps", steps) for r in runs.values()) if m != REFERENCE else 0
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table: mean ± std (%) per metric, then GFLOPs and seconds per pretraining step."""
    head = "| method | " + " | ".join(label for _, _, label in METRICS) + " | steps | GFLOPs/step (fwd+bwd) | s/step |"
    lines = [head, "|---" * (len(METRICS) + 4) + "|"]
    for r in rows:
        cells = [f"{r[p]['mean']:.1f} ± {r[p]['std']:.1f}" for p, _, _ in METRICS]
        cost = f"{r['steps']} | {r['gflops_per_step']:.2f} | {r['s_per_step']:.3f}" if r["steps"] else "0 | – | –"
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {cost} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS) + 1, figsize=(4.6 * (len(METRICS) + 1), 4.2))
    names = [r["method"] for r in rows]
    palette = {
        REFERENCE: "#9e9e9e",
        "mae": "#1f77b4",
        EQUAL_FLOPS: "#aec7e8",
        "multimae": "#ff7f0e",
        "c2fmae": "#2ca02c",
    }
    colors = [palette.get(n, "#98df8a") for n in names]  # light green: the C2FMAE ablations
    for ax, (probe, _, label) in zip(axes, METRICS, strict=False):
        means = [r[probe]["mean"] for r in rows]
        stds = [r[probe]["std"] for r in rows]
        ax.bar(range(len(rows)), means, yerr=stds, color=colors, capsize=3)
        for i, r in enumerate(rows):  # individual seeds
            ax.scatter([i] * len(r[probe]["values"]), r[probe]["values"], s=8, color="k", zorder=3)
        ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(label + " (%)")
        lo = min(min(r[probe]["values"]) for r in rows)
        ax.set_ylim(max(0.0, lo - 10), min(100.0, max(m + s for m, s in zip(means, stds, strict=True)) + 5))
        ax.grid(axis="y", alpha=0.3)
    ax = axes[-1]  # pretraining compute: steps x FLOPs of one step
    total = [r["steps"] * r["gflops_per_step"] for r in rows]
    ax.bar(range(len(rows)), total, color=colors)
    for i, (v, r) in enumerate(zip(total, rows, strict=True)):
        ax.text(i, v, f"{v:.0f}\n({r['steps']} st)" if v else "0", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
    ax.set_title("pretraining GFLOPs (steps x fwd+bwd)")
    ax.set_ylim(0, max(total) * 1.2 if max(total) else 1)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=[*METHODS, REFERENCE], choices=[*METHODS, REFERENCE, EQUAL_FLOPS])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per pretraining run (all methods)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup-steps", type=int, default=15)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--decoder-dim", type=int, default=64)
    p.add_argument("--decoder-depth", type=int, default=1)
    p.add_argument("--pretrain-samples", type=int, default=2048)
    p.add_argument("--probe-train", type=int, default=500)
    p.add_argument("--probe-val", type=int, default=250)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on a busy box)")
    p.add_argument("--work-dir", default=None, help="pretraining runs (default: a temp dir)")
    p.add_argument("--out", default=str(RESULTS / "quality.json"))
    p.add_argument("--fresh", action="store_true", help="ignore finished (method, seed) pairs in --out")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    out = Path(a.out)
    state = json.loads(out.read_text()) if out.is_file() and not a.fresh else {}
    runtime_only = ("methods", "seeds", "work_dir", "out", "fresh", "workers", "threads")
    settings = {k: v for k, v in vars(a).items() if k not in runtime_only}
    if state.get("settings", settings) != settings:
        print(f"{out} was made with other settings; pass --fresh to start over", file=sys.stderr)
        return 2
    state.update(
        settings=settings,
        machine=f"{os.cpu_count()}-core CPU, Python {sys.version.split()[0]}, torch {torch.__version__}",
        date=time.strftime("%Y-%m-%d"),
    )
    results: dict[str, dict[str, dict]] = state.setdefault("results", {})
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="c2fmae_quality_"))
    t0 = time.time()
    splits: tuple[list[dict], list[dict]] | None = None  # built on first use (not for a report-only rerun)
    flops: dict[str, float] = state.setdefault("gflops_per_step", {})
    for seed in a.seeds:
        for method in a.methods:
            if str(seed) in results.get(method, {}):
                continue
            t = time.time()
            if method == REFERENCE:
                torch.manual_seed(seed)
                encoder = load_encoder(
                    "c2fmae_vit_test",
                    img_size=a.img_size,
                    patch_size=a.patch,
                    embed_dim=a.dim,
                    depth=a.depth,
                    num_heads=a.heads,
                )
                s_per_step, steps = 0.0, 0
            else:
                for m in ("mae", "c2fmae") if method == EQUAL_FLOPS else (method,):
                    if m not in flops:  # measured once per method, before its first run
                        flops[m] = round(step_gflops(a, m), 3)
                        t = time.time()
                if method == EQUAL_FLOPS:
                    flops[method] = flops["mae"]
                steps = equal_flops_steps(a, flops) if method == EQUAL_FLOPS else a.steps
                encoder, s_per_step = pretrain(a, work, method, seed, flops)
            pre_s = time.time() - t
            splits = splits or eval_splits(a)
            res = run_probes(
                encoder,
                *splits,
                ("knn", "linear", "seg"),
                batch_size=64,
                seed=seed,
                linear_epochs=100,
                seg_epochs=30,
            )
            res["pretrain_s"] = round(pre_s, 1)
            res["s_per_step"] = round(s_per_step, 4)
            res["steps"] = steps
            results.setdefault(method, {})[str(seed)] = res
            write_json(state, out)
            print(
                f"[{time.time() - t0:6.0f}s] {method:16s} seed {seed}: k-NN {100 * res['knn']['top1']:.1f}  "
                f"linear {100 * res['linear']['top1']:.1f}  mIoU {100 * res['seg']['miou']:.1f}  "
                f"(pretrain {pre_s:.0f}s, {s_per_step:.3f} s/step)",
                flush=True,
            )
    order = [m for m in [*METHODS, EQUAL_FLOPS, REFERENCE] if m in results]
    rows = summarize(results, order, flops, state["settings"]["steps"])
    state["summary"] = rows
    write_json(state, out)
    md = table(rows)
    (out.with_suffix(".md")).write_text(md + "\n")
    s = state["settings"]
    plot(
        rows,
        out.with_suffix(".png"),
        f"{s['steps']} steps (mae_eqflops: c2fmae's FLOPs) x batch {s['batch_size']}, ViT dim {s['dim']} "
        f"depth {s['depth']} patch {s['patch']} @ {s['img_size']}px; held-out synthetic scenes; "
        "mean ± std over seeds (dots)",
    )
    print(md)
    print(f"total {time.time() - t0:.0f}s; results in {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

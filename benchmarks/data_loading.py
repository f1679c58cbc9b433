""" Data loading and labelling throughput (issue 5)

Loading, per worker (one process, one torch thread, as in a DataLoader worker), samples/s of:
- `decode`: read the tar shards and decode the JPEG image only (the floor any loader pays);
- `mae`: decode + MAE's image-only train transform (torchvision RandomResizedCrop 224 bicubic,
  flip, ToTensor, Normalize) -- what a plain MAE loader does;
- `triple`: decode image + 8/16-bit PNG masks + checks (c2fmae.data.shards.decode_triple);
- `c2fmae`: ShardDataset -> JointTransform at 224 (image, stride-4 masks) -> collated batch.
All on the same shards (photo-textured synthetic scenes, `--scene-size` px JPEG + PNG masks), the
pipelines interleaved over `--rounds` rounds (median reported), ratios against `decode` and `mae`.
Also the synthetic scene generator's samples/s (raw scene, no shards).

Labelling (`--label`), images/s of the whole `LabelJob` (decode, label, shard writing, overlays
off; model loading excluded) per backend on CPU: `classical` on scikit-image's photographs;
`grounded-sam` and `mask2former` with tiny random-init models (c2fmae.labeling.tiny, 64 px inputs,
the 133 COCO classes as prompts): their figure is the pipeline's own overhead (pre/post-processing
of full-size photos, prompt chunking, painting, shards), not the speed of the real checkpoints.
`--full-size` adds the transformers backends with transformers' default (released-size)
architectures and processors, random-init: Grounding DINO Swin-T + BERT-base at 800 px, SAM-HQ
ViT-B at 1024 px, Mask2Former Swin-S at 800 px -- the compute of real checkpoints (random weights
change only how many boxes pass the threshold).

    nice -n 5 python benchmarks/data_loading.py                       # loading + labelling, ~2 min on 2 cores
    python benchmarks/data_loading.py --no-label --num-samples 512    # loading only
    nice -n 5 python benchmarks/data_loading.py --no-loading --full-size --label-images 4
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from c2fmae.data import JointTransform, ShardDataset, SyntheticScenes, decode_image, write_shards
from c2fmae.data.shards import expand_urls, iter_tar

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "coins")


def _collate(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def run_decode(urls, batch_size):
    n = 0
    for url in urls:
        for _, files in iter_tar(url):
            decode_image(files["jpg"])
            n += 1
    return n


def run_mae(urls, batch_size):
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.RandomResizedCrop(224, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                    T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406],
                                                                        [0.229, 0.224, 0.225])])
    n, buf = 0, []
    for url in urls:
        for _, files in iter_tar(url):
            buf.append(tf(Image.fromarray(decode_image(files["jpg"]))))
            if len(buf) == batch_size:
                torch.stack(buf)
                n, buf = n + len(buf), []
    return n + len(buf)


def run_triple(urls, batch_size):
    from c2fmae.data.shards import decode_triple

    n = 0
    for url in urls:
        for key, files in iter_tar(url):
            decode_triple(files, key)
            n += 1
    return n


def run_c2fmae(urls, batch_size):
    ds = ShardDataset(urls, JointTransform(224), shuffle=True, shuffle_buffer=64)
    n, buf = 0, []
    for s in ds:
        buf.append(s)
        if len(buf) == batch_size:
            _collate(buf)
            n, buf = n + len(buf), []
    return n + len(buf)


PIPELINES = {"decode": run_decode, "mae": run_mae, "triple": run_triple, "c2fmae": run_c2fmae}


def bench_loading(args, tmp: Path) -> dict:
    t = time.perf_counter()
    ds = SyntheticScenes(args.num_samples, args.scene_size, seed=1)
    write_shards(ds.iter_raw(), tmp / "shards", samples_per_shard=64, progress=False)
    gen = args.num_samples / (time.perf_counter() - t)   # includes JPEG/PNG encoding and tar writing
    urls = expand_urls(str(tmp / "shards"))
    t = time.perf_counter()
    for i in range(min(64, args.num_samples)):
        ds.raw(i)
    scene_rate = min(64, args.num_samples) / (time.perf_counter() - t)
    rates: dict[str, list[float]] = {k: [] for k in PIPELINES}
    for _ in range(args.rounds):
        for name, fn in PIPELINES.items():
            t = time.perf_counter()
            n = fn(urls, args.batch_size)
            rates[name].append(n / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"samples_per_s": {k: round(v, 1) for k, v in med.items()},
            "vs_decode": {k: round(med["decode"] / v, 2) for k, v in med.items()},
            "c2fmae_vs_mae": round(med["mae"] / med["c2fmae"], 2),
            "synthetic_scenes_per_s": round(scene_rate, 1), "write_shards_per_s": round(gen, 1)}


def _photo_folder(root: Path, n: int) -> Path:
    import skimage.data
    from PIL import Image

    root.mkdir(parents=True)
    for i in range(n):
        img = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()
        Image.fromarray(img).convert("RGB").save(root / f"photo{i:03d}.jpg", quality=92)
    return root


def bench_labelling(args, tmp: Path, full_size: bool = False) -> dict:
    from c2fmae.labeling import LabelJob, build_labeler
    from c2fmae.labeling.tiny import save_tiny_grounded_sam, save_tiny_mask2former

    src = tmp / "photos"
    if not src.exists():
        _photo_folder(src, args.label_images)
    models = tmp / ("full" if full_size else "tiny")
    det, seg = save_tiny_grounded_sam(models, full_size=full_size)
    m2f = save_tiny_mask2former(models / "mask2former", full_size=full_size)
    makers = {"grounded-sam": lambda: build_labeler("grounded-sam", detector=str(det), segmenter=str(seg),
                                                    device="cpu"),
              "mask2former": lambda: build_labeler("mask2former", model=str(m2f), device="cpu")}
    if not full_size:
        makers = {"classical": lambda: build_labeler("classical"), **makers}
    out = {}
    for name, make in makers.items():
        lab = make()
        t = time.perf_counter()
        s = LabelJob(lab, str(src), str(models / f"out-{name}"), shard_size=1000, batch_size=args.label_batch,
                     overlays=0, progress=False).run()
        dt = time.perf_counter() - t
        out[name] = {"images_per_s": round(s["labelled"] / dt, 3), "s_per_image": round(dt / s["labelled"], 1),
                     "images": s["labelled"]}
        print(name, "full-size" if full_size else "", out[name], flush=True)
    out["image_sizes"] = "scikit-image photographs, 303x384 to 512x512 (astronaut, chelsea, coffee, rocket, coins)"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-samples", type=int, default=256, help="synthetic scenes packed into shards")
    p.add_argument("--scene-size", type=int, default=320, help="scene side in px (ImageNet-like ~ 300-500)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--no-label", action="store_true", help="skip the labelling benchmark")
    p.add_argument("--no-loading", action="store_true", help="skip the loading benchmark")
    p.add_argument("--full-size", action="store_true", help="also label with released-size random-init models")
    p.add_argument("--label-images", type=int, default=10)
    p.add_argument("--label-batch", type=int, default=4)
    args = p.parse_args()
    threads = torch.get_num_threads()
    res = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "args": vars(args)}
    with tempfile.TemporaryDirectory() as d:
        if not args.no_loading:
            torch.set_num_threads(1)  # one DataLoader worker's view
            res["loading_one_worker"] = bench_loading(args, Path(d))
            print(json.dumps(res["loading_one_worker"], indent=1), flush=True)
        torch.set_num_threads(threads)
        res["torch_threads_labelling"] = threads
        if not args.no_label:
            res["labelling_cpu"] = bench_labelling(args, Path(d))
        if args.full_size:
            res["labelling_cpu_full_size"] = bench_labelling(args, Path(d), full_size=True)
    res["gpu"] = "not measured (labelling runs on CPU here)"
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

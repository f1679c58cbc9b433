"""`c2fmae eval` (frozen-feature probes) and `c2fmae finetune` (short classification fine-tune).

c2fmae eval --model local-dir:runs/x/export --data synthetic --probes knn linear seg --output eval.json
c2fmae eval --model vit_small_patch16_224 --pretrained --data /data/imagenette --probes knn linear
c2fmae finetune --model local-dir:runs/x/export --data /data/imagenette --epochs 10 --layer-decay 0.65
"""

from __future__ import annotations

import argparse
import json

import torch

from .evaluate import PROBES, eval_datasets, run_probes
from .features import build_loader, load_encoder, write_json

__all__ = ["add_eval_arguments", "eval_main", "add_finetune_arguments", "finetune_main"]


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _positive(kind):
    def parse(s: str):
        v = kind(s)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v

    return parse


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("encoder and data")
    g.add_argument(
        "--model",
        required=True,
        help="timm architecture, local-dir:DIR, hf-hub:ORG/REPO, export "
        "directory, training run directory or checkpoint file",
    )
    g.add_argument("--pretrained", action="store_true", help="load the architecture's default weights (timm names)")
    g.add_argument("--arch", default=None, help="architecture of a bare state-dict file")
    g.add_argument("--img-size", type=_positive(int), default=None, help="input size (default: the model's)")
    g.add_argument(
        "--data",
        required=True,
        help="ImageFolder root with <train-split>/ and <val-split>/ "
        "sub-folders, wds:URL (classification shards: KEY.jpg + KEY.cls), or a c2fmae source: "
        "synthetic | folder:PATH | shards:URL",
    )
    g.add_argument(
        "--val-data",
        default=None,
        help="held-out split: ImageFolder root, wds: shards, or the path of a folder/shards source",
    )
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default="val")
    g.add_argument("--num-samples", type=_positive(int), default=None, help="train samples (synthetic data)")
    g.add_argument("--val-samples", type=_positive(int), default=None, help="held-out samples (synthetic data)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=_positive(int), default=64)
    g.add_argument("--workers", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    g.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on GPU")
    g.add_argument("--output", default=None, help="write the result JSON here (atomically)")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `c2fmae eval`."""
    _common(parser)
    g = parser.add_argument_group("probes")
    g.add_argument("--probes", nargs="+", default=["knn", "linear"], choices=PROBES)
    g.add_argument("--k", type=_positive(int), default=20, help="k-NN neighbours (DINO: 20)")
    g.add_argument("--temperature", type=_positive(float), default=0.07, help="k-NN vote temperature (DINO: 0.07)")
    g.add_argument("--linear-epochs", type=_positive(int), default=100)
    g.add_argument("--linear-lr", type=_positive(float), default=1e-3)
    g.add_argument("--seg-epochs", type=_positive(int), default=30)
    g.add_argument("--seg-lr", type=_positive(float), default=1e-3)
    g.add_argument(
        "--seg-classes",
        type=_positive(int),
        default=None,
        help="segmentation classes (default: the dataset's num_classes, else max mask id + 1)",
    )


def eval_main(args: argparse.Namespace) -> int:
    """Run the probes and print (and optionally write) the JSON result."""
    device = _device(args.device)
    encoder = load_encoder(args.model, pretrained=args.pretrained, arch=args.arch, img_size=args.img_size)
    train_set, val_set = eval_datasets(
        args.data,
        encoder,
        args.img_size,
        args.train_split,
        args.val_split,
        args.num_samples,
        args.val_samples,
        args.seed,
        val_data=args.val_data,
    )
    result = run_probes(
        encoder,
        train_set,
        val_set,
        tuple(args.probes),
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=device,
        amp=not args.no_amp,
        k=args.k,
        temperature=args.temperature,
        linear_epochs=args.linear_epochs,
        linear_lr=args.linear_lr,
        seg_epochs=args.seg_epochs,
        seg_lr=args.seg_lr,
        num_seg_classes=args.seg_classes,
        seed=args.seed,
    )
    result = {"model": args.model, "data": args.data, **result}
    if args.output:
        write_json(result, args.output)
    print(json.dumps(result, indent=2))
    return 0


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `c2fmae finetune`."""
    _common(parser)
    g = parser.add_argument_group("fine-tuning (MAE main_finetune.py defaults, scaled down)")
    g.add_argument("--epochs", type=_positive(int), default=10)
    g.add_argument("--lr", type=_positive(float), default=None, help="absolute lr (default: blr * batch / 256)")
    g.add_argument("--blr", type=_positive(float), default=5e-4, help="base lr per 256 images (MAE: 5e-4)")
    g.add_argument("--min-lr", type=float, default=1e-6)
    g.add_argument("--weight-decay", type=float, default=0.05)
    g.add_argument("--layer-decay", type=_positive(float), default=0.75, help="layer-wise lr decay (ViT-B: 0.65)")
    g.add_argument("--warmup-epochs", type=float, default=1.0)
    g.add_argument("--drop-path", type=float, default=0.1)
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--clip-grad", type=float, default=None)
    g.add_argument("--save", default=None, help="save the fine-tuned classifier (timm Hub layout) to this folder")


def finetune_main(args: argparse.Namespace) -> int:
    """Fine-tune the encoder with a new head; print and optionally write the per-epoch metrics."""
    from .finetune import finetune

    device = _device(args.device)
    model = load_encoder(
        args.model,
        pretrained=args.pretrained,
        arch=args.arch,
        img_size=args.img_size,
        drop_path_rate=args.drop_path,
    )
    train_set, val_set = eval_datasets(
        args.data,
        model,
        args.img_size,
        args.train_split,
        args.val_split,
        args.num_samples,
        args.val_samples,
        args.seed,
        train_transform=True,
        val_data=args.val_data,
    )
    num_classes = _num_labels(train_set)
    model.reset_classifier(num_classes)
    if isinstance(getattr(model, "head", None), torch.nn.Linear):  # MAE main_finetune.py head init
        torch.nn.init.trunc_normal_(model.head.weight, std=2e-5)
        torch.nn.init.zeros_(model.head.bias)
    lr = args.lr or args.blr * args.batch_size / 256
    torch.manual_seed(args.seed)
    train_loader = build_loader(train_set, args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True)
    val_loader = build_loader(val_set, args.batch_size, num_workers=args.workers)
    hist = finetune(
        model,
        train_loader,
        val_loader,
        epochs=args.epochs,
        lr=lr,
        min_lr=args.min_lr,
        weight_decay=args.weight_decay,
        layer_decay=args.layer_decay,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        clip_grad=args.clip_grad,
        device=device,
        amp=not args.no_amp,
    )
    result = {
        "model": args.model,
        "data": args.data,
        "num_classes": num_classes,
        "lr": lr,
        "layer_decay": args.layer_decay,
        "lr_scales": hist["lr_scales"],
        "val": hist["val"],
        "final_train_loss": hist["losses"][-1] if hist["losses"] else None,
    }
    if args.save:
        from timm.models import save_for_hf

        save_for_hf(model.cpu(), args.save, safe_serialization=True)
        result["saved_to"] = args.save
    if args.output:
        write_json(result, args.output)
    print(json.dumps(result, indent=2))
    return 0


def _num_labels(dataset) -> int:
    if hasattr(dataset, "classes"):  # ImageFolder
        return len(dataset.classes)
    n = getattr(dataset, "num_scene_labels", None)
    if n:
        return int(n)
    raise ValueError("cannot tell the number of image labels of --data (no .classes / .num_scene_labels)")

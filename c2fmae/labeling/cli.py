"""`c2fmae label`: pseudo-label images into WebDataset shards (resumable, sharded over torchrun ranks).

    c2fmae label --backend classical --input photos/ --output shards/
    torchrun --nproc-per-node 8 --no-python c2fmae label --backend grounded-sam \
        --input 'imagenet/train-{000000..001023}.tar' --output labelled/ --batch-size 16
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .backends import BACKENDS, Vocabulary, build_labeler
from .hf import DEFAULT_DETECTOR, DEFAULT_MASK2FORMER, DEFAULT_SEGMENTER
from .job import LabelJob


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="grounded-sam", help="pseudo-labeller")
    parser.add_argument("--input", required=True,
                        help="image folder, image file, or tar shard urls (brace patterns, pipe:, http)")
    parser.add_argument("--output", required=True, help="folder for the labelled shards, manifests, overlays")
    parser.add_argument("--vocab", default="", help="class list file (one per line, 'name (stuff)' for stuff); "
                        "default: the 133 COCO-panoptic classes (classical: colour terms)")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per output shard (folder input)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda:LOCAL_RANK when present)")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, help="grounded-sam: Grounding DINO id or dir")
    parser.add_argument("--segmenter", default=DEFAULT_SEGMENTER, help="grounded-sam: SAM-HQ id or dir")
    parser.add_argument("--model", default=DEFAULT_MASK2FORMER, help="mask2former: panoptic model id or dir")
    parser.add_argument("--box-threshold", type=float, default=0.3, help="grounded-sam box score threshold")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="mask2former segment score threshold")
    parser.add_argument("--segments", type=int, default=200, help="classical: SLIC superpixels per image")
    parser.add_argument("--overlays", type=int, default=2, help="overlay PNGs per shard (0 = none)")
    parser.add_argument("--rank", type=int, default=None, help="default: $RANK (torchrun) or 0")
    parser.add_argument("--world-size", type=int, default=None, help="default: $WORLD_SIZE or 1")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _device(arg: str | None) -> str | None:
    if arg:
        return arg
    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"


def label_main(args: argparse.Namespace) -> int:
    vocab = Vocabulary.from_file(args.vocab) if args.vocab else None
    if args.backend == "classical":
        if vocab is not None:
            print("c2fmae label: --vocab is ignored by the classical backend (it names colours)", file=sys.stderr)
        labeler = build_labeler("classical", n_segments=args.segments)
    elif args.backend == "grounded-sam":
        labeler = build_labeler("grounded-sam", detector=args.detector, segmenter=args.segmenter, vocab=vocab,
                                box_threshold=args.box_threshold, device=_device(args.device))
    else:
        labeler = build_labeler("mask2former", model=args.model, vocab=vocab, score_threshold=args.score_threshold,
                                device=_device(args.device))
    job = LabelJob(labeler, args.input, args.output, shard_size=args.shard_size, batch_size=args.batch_size,
                   overlays=args.overlays, rank=args.rank, world_size=args.world_size, progress=not args.quiet,
                   backend=args.backend)
    s = job.run()
    bad = s["unreadable"]
    print(f"c2fmae label: rank {job.rank}/{job.world_size}: {s['units']} shards "
          f"({s['skipped_units']} already done), {s['labelled']} images labelled, {len(bad)} unreadable")
    for b in bad[:20]:
        print(f"  unreadable: {b['name']}: {b['error']}")
    if len(bad) > 20:
        print(f"  ... {len(bad) - 20} more, see {args.output}/*.json")
    if os.environ.get("C2FMAE_LABEL_SUMMARY"):
        print(json.dumps(s))
    return 0

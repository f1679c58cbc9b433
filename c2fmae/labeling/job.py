"""The sharded, resumable labelling job: images in, WebDataset shards of (image, semantic, instance) out.

Work is cut into *units*, one per output shard: an image folder is listed (sorted, recursive) and cut
into `shard_size` images per unit; input tar shards map one to one onto output shards of the same
name. Rank r of `world_size` (torchrun's RANK / WORLD_SIZE) takes units `r::world_size`. A unit is
done when `OUTPUT/NAME.tar` exists: it is written to a temp file and renamed into place, after its
manifest `NAME.json` (sample count, unreadable images). A restarted job skips finished units and
redoes the rest, so a killed job ends with the same shards as an uninterrupted one. Unreadable
images are reported by name, counted in the manifest and the summary, and never stop the job.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from c2fmae.atomic import atomic_write_bytes
from c2fmae.data.io import BadSampleError, decode_image
from c2fmae.data.shards import IMAGE_EXTS, expand_urls, iter_tar, write_shard

from .overlay import save_overlay

_FILE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class Unit:
    """One output shard's worth of input: image files, or one input tar shard."""
    name: str
    files: list[Path] = field(default_factory=list)
    root: Path | None = None
    url: str | None = None


def plan_units(input: str, shard_size: int = 1000, prefix: str = "labels") -> list[Unit]:
    """Cut `input` (an image folder, an image file, or shard urls / brace patterns) into units."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    p = Path(input)
    if p.is_dir() and not any(p.glob("*.tar")):
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in _FILE_EXTS and f.is_file())
        if not files:
            raise FileNotFoundError(f"--input {input}: no images ({', '.join(_FILE_EXTS)}) found")
        return [Unit(f"{prefix}-{i // shard_size:06d}", files[i:i + shard_size], p)
                for i in range(0, len(files), shard_size)]
    if p.is_file() and p.suffix.lower() in _FILE_EXTS:
        return [Unit(f"{prefix}-000000", [p], p.parent)]
    urls = expand_urls(input)
    missing = [u for u in urls if not u.startswith("pipe:") and "://" not in u and not os.path.exists(u)]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FileNotFoundError(f"--input {input}: not an image folder, image file or existing shard: "
                                f"{', '.join(missing[:3])}{more} not found")
    names = [Path(u.split("::")[0].rstrip("-").split()[-1]).stem for u in urls]
    if len(set(names)) != len(names):
        raise ValueError(f"--input {input}: input shards must have distinct file names")
    return [Unit(n, url=u) for n, u in zip(names, urls, strict=True)]


def _ext(data: bytes) -> str | None:
    return "jpg" if data[:2] == b"\xff\xd8" else "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else None


def iter_unit(unit: Unit):
    """Yield `(key, name, raw bytes | None, error | None)` for each input image of a unit."""
    if unit.url is None:
        for f in unit.files:
            key = str(f.relative_to(unit.root).with_suffix("")).replace("/", "_").replace(".", "_")
            try:
                yield key, str(f), f.read_bytes(), None
            except OSError as e:
                yield key, str(f), None, f"cannot read ({e})"
        return
    try:
        for key, files in iter_tar(unit.url):
            ext = next((e for e in IMAGE_EXTS if e in files), None)
            name = f"{unit.url}:{key}"
            yield (key, f"{name}.{ext}", files[ext], None) if ext else (key, name, None, "no image member")
    except (BadSampleError, OSError) as e:
        yield "", unit.url, None, f"input shard unreadable from here on ({e})"


class LabelJob:
    """Run `labeler` over `input` into shards under `output` (see the module docstring)."""

    def __init__(self, labeler, input: str, output: str, shard_size: int = 1000, batch_size: int = 8,
                 overlays: int = 2, rank: int | None = None, world_size: int | None = None,
                 prefix: str = "labels", progress: bool = True, backend: str = ""):
        self.labeler, self.input, self.out = labeler, input, Path(output)
        self.batch_size, self.overlays, self.progress, self.backend = batch_size, overlays, progress, backend
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} must lie in [0, world_size={self.world_size})")
        if batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
        self.units = plan_units(input, shard_size, prefix)

    def run(self) -> dict:
        """Label this rank's unfinished units; returns a summary dict (also printed by the CLI)."""
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            meta = {"backend": self.backend, "input": self.input, "class_names": list(self.labeler.class_names),
                    "thing": [bool(t) for t in self.labeler.thing_mask], "ignore_index": 255}
            atomic_write_bytes(self.out / "vocab.json", json.dumps(meta, indent=1).encode())
        mine = self.units[self.rank::self.world_size]
        todo = [u for u in mine if not (self.out / f"{u.name}.tar").exists()]
        for u in todo:  # leftovers of a killed run of this rank's units
            for tmp in self.out.glob(f".{u.name}.*.tmp"):
                tmp.unlink()
        total = sum(len(u.files) for u in todo) if all(u.url is None for u in todo) else None
        bar = tqdm(total=total, unit="img", desc=f"label rank {self.rank}", disable=not self.progress)
        summary = {"units": len(mine), "skipped_units": len(mine) - len(todo), "labelled": 0, "unreadable": []}
        for u in todo:
            n, bad = self._run_unit(u, bar)
            summary["labelled"] += n
            summary["unreadable"] += bad
        bar.close()
        for u in mine:  # count unreadable images of units finished by an earlier run too
            if u in todo or not (self.out / f"{u.name}.json").exists():
                continue
            summary["unreadable"] += json.loads((self.out / f"{u.name}.json").read_text())["unreadable"]
        return summary

    def _run_unit(self, unit: Unit, bar) -> tuple[int, list[dict]]:
        samples, bad, batch = [], [], []

        def report(name: str, err: str) -> None:
            bad.append({"name": name, "error": err})
            bar.write(f"unreadable image {name}: {err}")

        def flush() -> None:
            if not batch:
                return
            images = [b[1] for b in batch]
            try:
                labels = self.labeler.label(images)
            except Exception:  # fall back to one image at a time to isolate the failing one
                labels = []
                for _, img, name, _ in batch:
                    try:
                        labels += self.labeler.label([img])
                    except Exception as e:
                        report(name, f"labeller failed ({type(e).__name__}: {e})")
                        labels.append(None)
            for (key, img, _, raw), lab in zip(batch, labels, strict=True):
                if lab is not None:
                    samples.append((key, img, lab[0], lab[1], raw))
            bar.update(len(batch))
            batch.clear()

        seen: set[str] = set()
        for key, name, data, err in iter_unit(unit):
            if err is None:
                try:
                    img = decode_image(data, name)
                except BadSampleError as e:
                    err = str(e).split(": ", 1)[-1]
            if err is not None:
                report(name, err)
                bar.update(1)
                continue
            if key in seen:
                key = f"{key}_{len(seen)}"
            seen.add(key)
            ext = _ext(data)
            batch.append((key, img, name, (ext, data) if ext else None))
            if len(batch) == self.batch_size:
                flush()
        flush()
        for key, img, sem, ins, _ in samples[: self.overlays]:
            save_overlay(self.out / "overlays" / f"{unit.name}_{key}.png", img, sem, ins, self.labeler.class_names)
        manifest = {"shard": f"{unit.name}.tar", "num_samples": len(samples), "unreadable": bad}
        atomic_write_bytes(self.out / f"{unit.name}.json", json.dumps(manifest, indent=1).encode())
        write_shard(self.out / f"{unit.name}.tar", samples)  # the rename marks the unit done
        return len(samples), bad


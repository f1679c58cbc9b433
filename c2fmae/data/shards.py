"""WebDataset tar shards of (image, semantic, instance) triples: writer and splitting reader.

A sample is three tar members sharing a key: `KEY.jpg` (or `.png`), `KEY.sem.png`, `KEY.ins.png`;
masks are 8/16-bit PNG decoded with PIL (ids above 255 survive). Urls are local paths, brace
patterns (`data/shard-{000000..000127}.tar`), a folder (all `*.tar` in it) or anything
`webdataset.gopen` opens (`pipe:aws s3 cp s3://... -`, `https://...`). Shards are written to a
temp file and renamed into place, with fixed tar metadata, so the same input gives the same bytes.
"""
from __future__ import annotations

import io
import os
import re
import tarfile
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_open
from .io import BadSampleError, check_triple, decode_image, decode_mask, encode_image, encode_mask
from .transforms import JointTransform, sample_rng

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Expand brace patterns / folders / '::'-separated lists into a list of shard urls."""
    import braceexpand

    items = urls.split("::") if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for u in items:
        if not u:
            continue
        if not u.startswith("pipe:") and "://" not in u and os.path.isdir(u):
            out += sorted(str(p) for p in Path(u).glob("*.tar"))
        else:
            out += list(braceexpand.braceexpand(u))
    if not out:
        raise FileNotFoundError(f"no shards found for {urls!r}")
    return out


def open_url(url: str):
    """A binary stream for a local path, `pipe:CMD`, or any url webdataset.gopen supports."""
    if url.startswith("pipe:") or "://" in url:
        try:
            from webdataset.gopen import gopen
        except ImportError as e:
            raise ImportError("reading remote / pipe: shards needs webdataset: pip install 'c2fmae[train]'") from e
        return gopen(url, "rb")
    if not os.path.exists(url):
        raise FileNotFoundError(f"shard not found: {url}")
    return open(url, "rb")


def iter_tar(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield `(key, {ext: bytes})` groups of consecutive members of one tar shard."""
    stream = open_url(url)
    try:
        key, files = None, {}
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    m = _KEY_RE.match(member.name)
                    if m is None:
                        continue
                    k, ext = m.groups()
                    if k != key and key is not None:
                        yield key, files
                        files = {}
                    key = k
                    files[ext.lower()] = tar.extractfile(member).read()
        except tarfile.TarError as e:
            raise BadSampleError(f"{url}: broken tar shard after key {key!r} ({e})") from e
        if key is not None:
            yield key, files
    finally:
        stream.close()


def decode_triple(files: dict[str, bytes], name: str, num_classes: int | None = None):
    """`(image, semantic, instance)` from one sample's members; errors name `name` (url:key)."""
    ext = next((e for e in IMAGE_EXTS if e in files), None)
    missing = [x for x, ok in (("image (.jpg/.png)", ext), (".sem.png", "sem.png" in files),
                               (".ins.png", "ins.png" in files)) if not ok]
    if missing:
        raise BadSampleError(f"{name}: sample lacks {', '.join(missing)} (has {sorted(files)})")
    image = decode_image(files[ext], f"{name}.{ext}")
    sem = decode_mask(files["sem.png"], f"{name}.sem.png")
    ins = decode_mask(files["ins.png"], f"{name}.ins.png")
    check_triple(image, sem, ins, name, num_classes)
    return image, sem, ins


def iter_shards(urls: str | Sequence[str], num_classes: int | None = None):
    """Yield raw `(key, image, semantic, instance)` from all shards in order (no splitting)."""
    for url in expand_urls(urls):
        for key, files in iter_tar(url):
            yield (key, *decode_triple(files, f"{url}:{key}", num_classes))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "", ""
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str | Path, samples: Iterable[tuple], image_format: str = "jpg") -> int:
    """Write `(key, image, semantic, instance)` samples to one tar, atomically; returns the count.

    A sample may carry a fifth item `(ext, bytes)`: the original encoded image, stored as is
    (no re-encoding loss) instead of encoding `image` as `image_format`.
    """
    n = 0
    with atomic_open(path) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, image, sem, ins, *raw in samples:
            if "." in key or "/" in key:
                raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
            check_triple(np.asarray(image), np.asarray(sem), np.asarray(ins), key)
            if raw and raw[0] is not None:  # (ext, encoded bytes) of the original image file
                _add(tar, f"{key}.{raw[0][0]}", raw[0][1])
            else:
                _add(tar, f"{key}.{image_format}", encode_image(image, image_format))
            _add(tar, f"{key}.sem.png", encode_mask(sem))
            _add(tar, f"{key}.ins.png", encode_mask(ins))
            n += 1
    return n


def write_shards(samples: Iterable[tuple], out_dir: str | Path, samples_per_shard: int = 1000,
                 prefix: str = "shard", image_format: str = "jpg", progress: bool = True) -> list[str]:
    """Pack `(key, image, semantic, instance)` samples into `out_dir/{prefix}-NNNNNN.tar` shards.

    Any source works: `SyntheticScenes(...).iter_raw()`, `FolderDataset(...).iter_raw()`,
    `iter_shards(urls)` (re-sharding). Each shard is renamed into place when complete.
    """
    from tqdm import tqdm

    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    paths, buf = [], []
    bar = tqdm(samples, desc="writing shards", unit="img", disable=not progress)
    for s in bar:
        buf.append(s)
        if len(buf) == samples_per_shard:
            paths.append(str(Path(out_dir) / f"{prefix}-{len(paths):06d}.tar"))
            write_shard(paths[-1], buf, image_format)
            buf = []
    if buf:
        paths.append(str(Path(out_dir) / f"{prefix}-{len(paths):06d}.tar"))
        write_shard(paths[-1], buf, image_format)
    return paths


class ShardDataset(torch.utils.data.IterableDataset):
    """Iterable over WebDataset shards, split by rank then by DataLoader worker.

    Shard order (if `shuffle`) is permuted by `(seed, epoch)`, then rank r takes shards
    `r::world_size` and worker w of that rank `w::num_workers`, so each sample is seen exactly once
    per epoch over all ranks and workers. Samples pass a seeded shuffle buffer; each sample's
    crop/flip is a pure function of `(seed, epoch, key)`. Bad samples raise an error naming
    `url:key`, or with `skip_bad` are skipped with a warning and counted (`self.num_skipped`, per worker).
    """

    def __init__(self, urls: str | Sequence[str], transform: JointTransform | None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, shuffle_buffer: int = 1000,
                 num_classes: int | None = None, skip_bad: bool = False, return_key: bool = False):
        self.urls = expand_urls(urls)
        self.transform, self.seed, self.rank, self.world_size = transform, seed, rank, world_size
        self.shuffle, self.shuffle_buffer, self.num_classes = shuffle, shuffle_buffer, num_classes
        self.skip_bad, self.return_key, self.epoch, self.num_skipped = skip_bad, return_key, 0, 0
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_shards(self) -> list[str]:
        """The shards this rank and DataLoader worker read this epoch."""
        urls = list(self.urls)
        if self.shuffle:
            urls = [urls[i] for i in np.random.default_rng([self.seed, self.epoch]).permutation(len(urls))]
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = urls[self.rank::self.world_size][wid::nw]
        if not mine:
            warnings.warn(f"rank {self.rank} worker {wid} gets no shard ({len(urls)} shards for "
                          f"{self.world_size} ranks x {nw} workers)", stacklevel=2)
        return mine

    def _samples(self, shards: list[str]):
        for url in shards:
            for key, files in iter_tar(url):
                try:
                    triple = decode_triple(files, f"{url}:{key}", self.num_classes)
                except BadSampleError as e:
                    if not self.skip_bad:
                        raise
                    self.num_skipped += 1
                    warnings.warn(f"skipping bad sample ({self.num_skipped} so far): {e}", stacklevel=2)
                    continue
                yield key, triple

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, wid])
        buf: list = []
        for item in self._samples(self.my_shards()):
            if not self.shuffle or self.shuffle_buffer <= 1:
                yield self._finish(*item)
                continue
            buf.append(item)
            if len(buf) >= self.shuffle_buffer:
                yield self._finish(*buf.pop(int(rng.integers(len(buf)))))
        while buf:
            yield self._finish(*buf.pop(int(rng.integers(len(buf)))))

    def _finish(self, key: str, triple: tuple) -> dict:
        image, sem, ins = triple
        if self.transform is None:
            out = {"image": image, "semantic": sem, "instance": ins}
        else:
            out = self.transform(image, sem, ins, sample_rng(self.seed, self.epoch, zlib.crc32(key.encode())))
        if self.return_key:
            out["key"] = key
        return out

"""Pictures of a C2FMAE run: reconstruction grids and the masking-curriculum plot.

A reconstruction grid has one row per sample and the columns
`input (masked) | sem in | ins in | sem pred | sem true | ins pred | ins true | rgb pred | rgb true`.
Masked patches of an input are flat grey; the row label gives the
strategy and the visible share of each input. Semantic maps use a fixed class palette (ignore = black);
instance targets get one colour per id (background black); predicted instance embeddings are shown
by their first three principal components. The RGB prediction (per-patch normalised pixels, MAE's
`norm_pix_loss`) is de-normalised with each patch's true mean / std, and the visible patches are
pasted back, as in MAE's demo notebook.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .atomic import atomic_open

__all__ = ["palette", "colorize", "instance_colors", "pca_rgb", "denormalize", "make_grid",
           "reconstruction_grid", "save_reconstructions", "curriculum_plot", "visualize_checkpoint"]

MEAN = np.array([0.485, 0.456, 0.406])  # timm IMAGENET_DEFAULT_MEAN / STD
STD = np.array([0.229, 0.224, 0.225])
GREY = np.array([128, 128, 128], dtype=np.uint8)


def palette(n: int) -> np.ndarray:
    """`(256, 3)` uint8 colours: `n` well-separated hues for classes 0..n-1; 255 (ignore) and the rest black."""
    out = np.zeros((256, 3), dtype=np.uint8)
    for i in range(min(n, 255)):
        h, s, v = (i * 0.618034) % 1.0, 0.55 + 0.45 * ((i // 7) % 2), 0.95 - 0.3 * ((i // 3) % 2)
        out[i] = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255
    return out


def colorize(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Class map `(h, w)` -> RGB uint8 `(h, w, 3)`."""
    return palette(num_classes)[np.clip(ids, 0, 255)]


def instance_colors(ids: np.ndarray) -> np.ndarray:
    """Instance map `(h, w)` -> RGB; id 0 (no instance) black, ids coloured by a fixed hash."""
    rng = np.random.default_rng(12345)
    lut = rng.integers(60, 256, size=(int(ids.max()) + 1, 3)).astype(np.uint8)
    lut[0] = 0
    return lut[ids]


def pca_rgb(emb: np.ndarray) -> np.ndarray:
    """Embeddings `(E, h, w)` -> RGB `(h, w, 3)` from their first three principal components."""
    e, h, w = emb.shape
    x = emb.reshape(e, -1).T.astype(np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:3]
    if comps.shape[0] < 3:
        comps = np.concatenate([comps, np.zeros((3 - comps.shape[0], e))])
    y = x @ comps.T
    lo, hi = np.percentile(y, 2, axis=0), np.percentile(y, 98, axis=0)
    y = np.clip((y - lo) / np.maximum(hi - lo, 1e-8), 0, 1)
    return (y.reshape(h, w, 3) * 255).astype(np.uint8)


def denormalize(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """ImageNet-normalised `(3, H, W)` -> uint8 `(H, W, 3)`."""
    x = image.detach().float().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
    x = x.transpose(1, 2, 0) * STD + MEAN
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def _grey_masked(img: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """Paint the patches where `masked` (grid `(gh, gw)`, True = hidden) is set flat grey; img `(H, W, 3)`.

    Flat, not blended: what the model does not see must not be visible in the picture."""
    gh, gw = masked.shape
    up = np.kron(masked.astype(np.uint8), np.ones((img.shape[0] // gh, img.shape[1] // gw), np.uint8)).astype(bool)
    out = img.copy()
    out[up] = GREY
    return out


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((size, size), Image.NEAREST))


def make_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], row_labels: Sequence[str] = (),
              cell: int = 128) -> Image.Image:
    """Tile equally sized RGB cells with a title row and optional row labels; returns a PIL image."""
    pad, head = 4, 16
    left = 64 if row_labels else 0
    ncol = len(titles)
    canvas = Image.new("RGB", (left + ncol * (cell + pad) + pad, head + len(rows) * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for j, t in enumerate(titles):
        draw.text((left + pad + j * (cell + pad), 2), t, fill=(0, 0, 0))
    for i, row in enumerate(rows):
        y = head + pad + i * (cell + pad)
        if row_labels:
            draw.multiline_text((4, y + 4), row_labels[i], fill=(0, 0, 0))
        for j, img in enumerate(row):
            canvas.paste(Image.fromarray(_resize(img, cell)), (left + pad + j * (cell + pad), y))
    return canvas


COLUMNS = ("input (masked)", "sem in", "ins in", "sem pred", "sem true", "ins pred", "ins true", "rgb pred",
           "rgb true")


def _rgb_prediction(model, image: torch.Tensor, pred: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
    """De-normalise the per-patch prediction with the true patch stats; paste visible patches. -> [B, 3, H, W]."""
    from c2fmae import losses
    p = model.patch_size
    target = losses.patchify(image.float(), p)                                       # [B, N, p*p*3]
    pred = pred.float()
    if model.cfg.norm_pix_loss:
        pred = pred * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
    if hidden is not None:
        pred = torch.where(hidden[..., None].bool(), pred, target)
    return losses.unpatchify(pred, p, model.grid_size, 3)


@torch.no_grad()
def reconstruction_grid(model, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
                        cell: int = 128) -> Image.Image:
    """The grid (see module docstring) of a C2FMAE forward `out` on `batch`."""
    from c2fmae import masking
    cfg = model.cfg
    gh, gw = model.grid_size
    C = cfg.num_classes
    masks = {m: out["mask"][:, i].reshape(-1, gh, gw).cpu().numpy() > 0 for i, m in enumerate(cfg.inputs)}
    rgb_pred = (_rgb_prediction(model, batch["image"], out["pred_rgb"], out["mask"][:, cfg.inputs.index("rgb")]
                                if "rgb" in cfg.inputs else None) if "pred_rgb" in out else None)
    sem_pred = model.unpatchify(out["pred_sem"], "sem").argmax(1).cpu().numpy() if "pred_sem" in out else None
    ins_pred = model.unpatchify(out["pred_ins"], "ins").float().cpu().numpy() if "pred_ins" in out else None
    blank = None
    rows, labels = [], []
    for i in range(batch["image"].shape[0]):
        img = denormalize(batch["image"][i])
        blank = np.full_like(img, 255) if blank is None else blank
        sem = batch["semantic"][i].cpu().numpy()
        ins = batch["instance"][i].cpu().numpy()
        sem_rgb, ins_rgb = colorize(sem, C), instance_colors(ins)
        hid = {m: masks[m][i] if m in masks else np.ones((gh, gw), bool) for m in ("rgb", "sem", "ins")}
        rows.append([
            _grey_masked(img, hid["rgb"]),
            _grey_masked(_resize(sem_rgb, img.shape[0]), hid["sem"]),
            _grey_masked(_resize(ins_rgb, img.shape[0]), hid["ins"]),
            colorize(sem_pred[i], C) if sem_pred is not None else blank,
            sem_rgb,
            pca_rgb(ins_pred[i]) if ins_pred is not None else blank,
            ins_rgb,
            denormalize(rgb_pred[i]) if rgb_pred is not None else blank,
            img,
        ])
        vis = "\n".join(f"{m} {100 * (1 - hid[m].mean()):.0f}%" for m in ("rgb", "sem", "ins"))
        labels.append(f"{masking.STRATEGIES[int(out['strategy'][i])]}-guided\n\nvisible:\n{vis}"
                      .replace("random-guided", "random"))
    return make_grid(rows, COLUMNS, labels, cell=cell)


def _save_png(img: Image.Image, path: str | Path) -> Path:
    """Atomic PNG write."""
    with atomic_open(path) as f:
        img.save(f, format="PNG")
    return Path(path)


def _eval_batch(data_cfg, num_samples: int) -> dict[str, torch.Tensor]:
    """The first `num_samples` eval-view samples of the run's data (validation split when it has one)."""
    from c2fmae.data import build_dataset
    try:
        ds = build_dataset(data_cfg, train=False)
    except (FileNotFoundError, ValueError):
        ds = build_dataset(data_cfg, train=True)
    if isinstance(ds, torch.utils.data.IterableDataset):
        samples = [s for _, s in zip(range(num_samples), ds, strict=False)]
    else:
        samples = [ds[i] for i in range(min(num_samples, len(ds)))]
    return torch.utils.data.default_collate(samples)


@torch.no_grad()
def save_reconstructions(model, cfg, path: str | Path, progress: float = 0.0, device: torch.device | str = "cpu",
                         num_samples: int = 4, seed: int = 0, write: bool = True,
                         batch: dict[str, torch.Tensor] | None = None, strategy: str | None = None) -> Path:
    """Run `model` (eval mode, fixed mask seed) on eval samples of `cfg.data` and write the grid PNG."""
    batch = batch if batch is not None else _eval_batch(cfg.data, num_samples)
    inner = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        dev_batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
        out = model(dev_batch, progress=progress, strategy=strategy)
    finally:
        torch.set_rng_state(state)
        model.train(was_training)
    if write:
        _save_png(reconstruction_grid(inner, {k: v.cpu() for k, v in dev_batch.items()},
                                      {k: v.detach().cpu() for k, v in out.items()}), path)
    return Path(path)


def curriculum_plot(cfg, path: str | Path, total_steps: int, step: int | None = None) -> Path:
    """Plot alpha_S, alpha_I and the random share over the run's steps (`cfg`: a C2FMAEConfig)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(f"the curriculum plot needs matplotlib: pip install 'c2fmae[train]' ({e})") from e
    from c2fmae.curriculum import strategy_probs
    t = np.linspace(0, 1, 401)
    probs = np.array([strategy_probs(x, cfg.schedule, cfg.t1, cfg.t2, cfg.fixed_probs) for x in t])
    x = t * total_steps
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=120)
    ax.stackplot(x, probs.T, labels=[r"semantic-guided $\alpha_S$", r"instance-guided $\alpha_I$", "random"],
                 colors=["#4c72b0", "#dd8452", "#8c8c8c"], alpha=0.85)
    if step is not None and 0 < step < total_steps:
        ax.axvline(step, color="k", lw=1, ls="--", label=f"resumed at step {step}")
    ax.set(xlim=(0, total_steps), ylim=(0, 1), xlabel="optimizer step", ylabel="share of samples",
           title=f"masking curriculum ({cfg.schedule}, t1={cfg.t1}, t2={cfg.t2})")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return Path(path)


def _load_images(paths: Sequence[str], semantic: Sequence[str], instance: Sequence[str], img_size: int,
                 num_classes: int) -> dict[str, torch.Tensor]:
    """Images + masks -> an eval-view batch (central square crop, resize; masks nearest)."""
    from c2fmae.data import JointTransform, check_triple, decode_image, decode_mask
    for name, lst in (("--semantic", semantic), ("--instance", instance)):
        if len(lst) != len(paths):
            raise ValueError(f"{name}: expected one mask per image ({len(paths)}), got {len(lst)}")
    t = JointTransform(img_size, train=False)
    samples = []
    for ip, sp, np_ in zip(paths, semantic, instance, strict=True):
        for p in (ip, sp, np_):
            if not Path(p).is_file():
                raise FileNotFoundError(f"no such file: {p}")
        image, sem, ins = decode_image(ip), decode_mask(sp), decode_mask(np_)
        check_triple(image, sem, ins, ip, num_classes)
        samples.append(t(image, sem, ins, np.random.default_rng(0)))
    return torch.utils.data.default_collate(samples)


def visualize_checkpoint(checkpoint: str | Path, out: str | Path, images: Sequence[str] = (),
                         semantic: Sequence[str] = (), instance: Sequence[str] = (), num_samples: int = 4,
                         strategy: str | None = None, progress: float = 1.0, seed: int = 0,
                         device: str = "cpu") -> Path:
    """Reconstruction grid of a training checkpoint (or run directory) on given images + masks.

    Without `images`, the first `num_samples` eval samples of the run's own data are shown.
    """
    from c2fmae.data import DataConfig
    from c2fmae.hub import load_checkpoint
    from c2fmae.masking import STRATEGIES
    from c2fmae.models.c2fmae import C2FMAE, C2FMAEConfig
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"--progress must be in [0, 1], got {progress}")
    ckpt = load_checkpoint(checkpoint)
    conf = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(conf, dict) or "model" not in conf or "model" not in ckpt:
        raise ValueError(f"{checkpoint}: not a c2fmae training checkpoint (needs 'model' and 'config')")
    model = C2FMAE(C2FMAEConfig.from_dict(conf["model"]))
    model.load_state_dict(ckpt["model"])
    if images:
        batch = _load_images(images, semantic, instance, model.img_size[0], model.cfg.num_classes)
    else:
        batch = _eval_batch(DataConfig(**conf["data"]), num_samples)
    return save_reconstructions(model.to(device), None, out, progress=progress, device=device, seed=seed,
                                batch=batch, strategy=strategy)

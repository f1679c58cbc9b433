"""The shipped mmdet / mmseg configs end to end (tiny override): mmengine Runner train + val on tiny COCO /
ADE20K-format datasets written here, and init_detector / init_model inference with `c2fmae export` weights.

Needs the mm extra (`bash tools/install_mm.sh`). Tiny ViT: dim 64, depth 4, patch 8; 64-128 px images.
"""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from mmengine.config import Config
from PIL import Image
from safetensors.torch import load_file, save_file

import c2fmae.mm as cmm
from c2fmae.cli import main as c2fmae_main

DET = "mask-rcnn_c2fmae-vit-b_simplefpn_lsj-100e_coco"
SEG = "upernet_c2fmae-vit-b_8xb2-amp-160k_ade20k-512x512"
pytestmark = [pytest.mark.mm, pytest.mark.slow]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """A tiny encoder (depth 4) exported offline with `c2fmae export`."""
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    save_file(timm.create_model("c2fmae_vit_test", depth=4).state_dict(), tmp / "sd.safetensors")
    assert c2fmae_main(["export", str(tmp / "sd.safetensors"), "--out", str(tmp / "out"),
                        "--arch", "c2fmae_vit_test", "--encoder-kwargs", '{"depth": 4}']) in (0, None)
    return tmp / "out"


def write_coco(root: Path, n: int = 4, hw=(96, 128)) -> None:
    """n images with 1-2 filled rectangles each, boxes + polygon masks, COCO json."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        img = rng.integers(0, 60, (*hw, 3), dtype=np.uint8)
        for j in range(1 + i % 2):
            x, y = int(rng.integers(0, hw[1] - 48)), int(rng.integers(0, hw[0] - 48))
            w, h = int(rng.integers(24, 48)), int(rng.integers(24, 48))
            img[y:y + h, x:x + w] = 200 if j == 0 else 120
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=1 + j, bbox=[x, y, w, h], area=w * h,
                             iscrowd=0, segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
        Image.fromarray(img).save(root / "images" / f"{i}.jpg")
        images.append(dict(id=i + 1, file_name=f"{i}.jpg", height=hw[0], width=hw[1]))
    cats = [dict(id=1, name="person"), dict(id=2, name="car")]
    (root / "ann.json").write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))


def write_ade(root: Path, n: int = 3, hw=(64, 80)) -> None:
    """ADE20K layout: images/{training,validation}/*.jpg and annotations/.../*.png (0 = ignore, 1..150)."""
    rng = np.random.default_rng(0)
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            seg = np.zeros(hw, np.uint8)
            seg[:, hw[1] // 2:] = 1 + i
            seg[hw[0] // 2:] = 7
            img = (seg[..., None] * 20 + rng.integers(0, 30, (*hw, 3))).astype(np.uint8)
            Image.fromarray(img).save(root / "images" / split / f"ADE_{i}.jpg")
            Image.fromarray(seg).save(root / "annotations" / split / f"ADE_{i}.png")


def _set(pipeline: list, type_: str, **kw) -> None:
    steps = [t for t in pipeline if t["type"] == type_]
    assert steps, f"{type_} not in pipeline"
    for t in steps:
        t.update(kw)


def tiny_det_cfg(tmp: Path, export: Path) -> Config:
    cfg = Config.fromfile(cmm.config_path(DET))
    size = (128, 128)
    cfg.model.backbone.update(model_name="c2fmae_vit_test", encoder_kwargs=dict(depth=4), window_size=4,
                              global_indices=(1, 3), out_indices=(3,), pretrained=str(export))
    cfg.model.neck.update(backbone_channel=64, in_channels=[16, 32, 64, 64], out_channels=32)
    cfg.model.data_preprocessor.batch_augments[0].size = size
    cfg.model.rpn_head.update(in_channels=32, feat_channels=32)
    roi = cfg.model.roi_head
    roi.bbox_roi_extractor.out_channels = roi.mask_roi_extractor.out_channels = 32
    roi.bbox_head.update(in_channels=32, conv_out_channels=32, fc_out_channels=64)
    roi.mask_head.update(in_channels=32, conv_out_channels=32, num_classes=2)
    roi.bbox_head.num_classes = 2
    cfg.model.train_cfg.rcnn.sampler.num = 64
    cfg.model.test_cfg.rcnn.score_thr = 0.0  # random heads: keep detections so the metric has input
    # square images: with random heads some boxes lie wholly in the test-time Pad area (the ViTDet pipeline pads
    # to the fixed size and mmdet then clips boxes to the padded shape), which mmdet 3.3's CPU mask pasting
    # (`_do_paste_mask`, skip_empty) cannot handle; the GPU path and trained detectors do not hit it
    write_coco(tmp / "coco", hw=size)
    _set(cfg.train_dataloader.dataset.pipeline, "RandomResize", scale=size)
    _set(cfg.train_dataloader.dataset.pipeline, "RandomCrop", crop_size=size)
    for dl in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        dl.update(batch_size=2, num_workers=0, persistent_workers=False)
        dl.dataset.update(data_root=str(tmp / "coco"), ann_file="ann.json", data_prefix=dict(img="images/"),
                          metainfo=dict(classes=("person", "car")))
    for dl in (cfg.val_dataloader, cfg.test_dataloader):
        _set(dl.dataset.pipeline, "Resize", scale=size)
        _set(dl.dataset.pipeline, "Pad", size=size)
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = str(tmp / "coco" / "ann.json")
    return _tiny_run(cfg, tmp)


def tiny_seg_cfg(tmp: Path, export: Path) -> Config:
    cfg = Config.fromfile(cmm.config_path(SEG))
    size = (64, 64)
    cfg.model.data_preprocessor.size = size
    cfg.model.backbone.update(model_name="c2fmae_vit_test", encoder_kwargs=dict(depth=4), img_size=size,
                              out_indices=(0, 1, 2, 3), pretrained=str(export))
    cfg.model.neck.embed_dim = 64
    cfg.model.decode_head.update(in_channels=[64] * 4, channels=32)
    cfg.model.auxiliary_head.update(in_channels=64, channels=16)
    cfg.model.test_cfg.update(crop_size=size, stride=(43, 43))
    write_ade(tmp / "ade")
    _set(cfg.train_dataloader.dataset.pipeline, "RandomResize", scale=(160, 64))
    _set(cfg.train_dataloader.dataset.pipeline, "RandomCrop", crop_size=size)
    for dl in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        dl.update(batch_size=2, num_workers=0, persistent_workers=False)
        dl.dataset.data_root = str(tmp / "ade")
    for dl in (cfg.val_dataloader, cfg.test_dataloader):
        _set(dl.dataset.pipeline, "Resize", scale=(160, 64))
    return _tiny_run(cfg, tmp)


def _tiny_run(cfg: Config, tmp: Path) -> Config:
    cfg.work_dir = str(tmp / "work")
    cfg.optim_wrapper.type = "OptimWrapper"  # AmpOptimWrapper needs a GPU; this CPU test checks the rest
    cfg.optim_wrapper.paramwise_cfg.num_layers = 4  # the tiny encoder's depth (checked by the constructor)
    cfg.train_cfg.update(max_iters=1, val_interval=1)
    cfg.train_cfg.pop("dynamic_intervals", None)
    cfg.default_hooks.checkpoint.update(interval=1, by_epoch=False)
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = "WARNING"
    cfg.randomness = dict(seed=0)
    return cfg


def _train_and_validate(cfg: Config, metric_keys: tuple[str, ...]) -> None:
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    enc = runner.model.backbone.encoder
    grads = []  # the optimizer wrapper zeroes .grad after its step: catch the gradient as it is computed
    enc.blocks[0].attn.qkv.weight.register_hook(lambda g: grads.append(float(g.abs().sum())))
    runner.train()  # 1 iteration (init_weights loads the export strictly), then a validation pass
    loss = runner.message_hub.get_scalar("train/loss").current()
    assert math.isfinite(loss) and loss > 0
    assert len(grads) == 1 and math.isfinite(grads[0]) and grads[0] > 0  # the loss reaches the first block
    # the encoder started from the export: one warm-up step (lr x 0.001 or less) moves it by < 1e-5
    ref = load_file(Path(cfg.model.backbone.pretrained) / "model.safetensors")
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=1e-5, msg=k)
    metrics = runner.val_loop.run()
    assert set(metric_keys) <= set(metrics), metrics
    # the run's own checkpoint (next to mmengine's last_checkpoint marker) loads with weights_only=False
    ckpt = Path(cfg.work_dir) / "iter_1.pth"
    assert cmm.is_run_output(ckpt)
    from c2fmae.mm.checkpoint import load_from_local

    assert "message_hub" in load_from_local(str(ckpt))


def test_det_config_trains_and_validates(tmp_path, export_dir):
    _train_and_validate(tiny_det_cfg(tmp_path, export_dir), ("coco/bbox_mAP", "coco/segm_mAP"))


def test_seg_config_trains_and_validates(tmp_path, export_dir):
    _train_and_validate(tiny_seg_cfg(tmp_path, export_dir), ("mIoU",))


def _assert_backbone_equals_export(model, export: Path) -> None:
    ref = load_file(export / "model.safetensors")
    own = model.backbone.encoder.state_dict()
    assert set(own) == set(ref) - {"cls_token", "norm.weight", "norm.bias"}
    for k, v in own.items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)


def test_init_detector_inference_with_export(tmp_path, export_dir):
    from mmdet.apis import inference_detector, init_detector

    cfg = tiny_det_cfg(tmp_path, export_dir)
    model = init_detector(cfg, str(export_dir / "model.safetensors"), device="cpu")
    _assert_backbone_equals_export(model, export_dir)
    res = inference_detector(model, str(tmp_path / "coco" / "images" / "0.jpg"))
    assert res.pred_instances.bboxes.shape[1] == 4 and torch.isfinite(res.pred_instances.scores).all()


def test_init_model_inference_with_export(tmp_path, export_dir):
    from mmseg.apis import inference_model, init_model

    cfg = tiny_seg_cfg(tmp_path, export_dir)
    model = init_model(cfg, str(export_dir / "model.safetensors"), device="cpu")
    _assert_backbone_equals_export(model, export_dir)
    res = inference_model(model, str(tmp_path / "ade" / "images" / "validation" / "ADE_0.jpg"))
    assert res.pred_sem_seg.data.shape == (1, 64, 80)


def test_readme_config_snippet_builds(tmp_path):
    """The README's "your own config" snippet: loads, builds a ViT-B Mask R-CNN and its layer-decay optimizer."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.optim import build_optim_wrapper

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## MMDetection / MMSegmentation\n", 1)[1].split("\n## ", 1)[0]
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", section, flags=re.S) if b.startswith("_base_"))
    (tmp_path / "my_config.py").write_text(snippet)
    cfg = Config.fromfile(str(tmp_path / "my_config.py"))
    register_all_modules()
    model = MODELS.build(cfg.model)  # no init_weights: the Hub weights are not fetched
    assert isinstance(model.backbone, cmm.C2FMAEViT) and isinstance(model.neck, cmm.SimpleFPN)
    assert model.backbone.global_indices == (2, 5, 8, 11) and model.backbone.depth == 12
    lr = {id(p): g["lr"] for g in build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
          for p in g["params"]}
    assert lr[id(model.backbone.encoder.pos_embed)] == pytest.approx(1e-4 * 0.7 ** 13)
    assert lr[id(model.backbone.encoder.blocks[11].mlp.fc1.weight)] == pytest.approx(1e-4 * 0.7)
    assert lr[id(model.roi_head.bbox_head.fc_cls.weight)] == pytest.approx(1e-4)

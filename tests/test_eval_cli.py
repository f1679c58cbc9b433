"""Encoder loading, data, feature extraction and the `c2fmae eval` / `c2fmae finetune` commands (tiny, CPU)."""

import argparse
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from c2fmae.eval import LabelledShards, extract_patch_features, load_encoder, run_probes
from c2fmae.eval.cli import add_eval_arguments, add_finetune_arguments, eval_main, finetune_main
from c2fmae.eval.evaluate import eval_datasets


def _parse(add, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """ImageFolder with two colour classes (red-ish vs blue-ish), 6 train + 4 val images each."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 4)):
        for cls, channel in (("blue", 2), ("red", 0)):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
                img[..., channel] = 200
                Image.fromarray(img).save(root / split / cls / f"{i}.png")
    return root


def test_load_encoder_from_training_checkpoint_and_export(tmp_path):
    from c2fmae.hub import export

    src = timm.create_model("c2fmae_vit_test", num_classes=0)
    ckpt = {
        "model": {f"encoder.{k}": v for k, v in src.state_dict().items()} | {"decoder.w": torch.zeros(3)},
        "step": 5,
        "config": {"model": {"encoder": "c2fmae_vit_test", "encoder_kwargs": {}}},
    }
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    x = torch.randn(2, 3, 64, 64)
    ref = src.eval()(x)
    for name in (str(tmp_path / "checkpoint.pth"), str(tmp_path)):  # a file, and a run directory
        assert torch.allclose(load_encoder(name).eval()(x), ref, atol=1e-5)
    export(tmp_path / "checkpoint.pth", tmp_path / "export")
    for name in (f"local-dir:{tmp_path / 'export'}", str(tmp_path / "export")):
        assert torch.allclose(load_encoder(name).eval()(x), ref, atol=1e-5)


def test_load_encoder_errors_name_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="--model.*missing.pth"):
        load_encoder(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="--model 'not_a_model_xyz'"):
        load_encoder("not_a_model_xyz")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_encoder(f"local-dir:{tmp_path}")


def test_patch_features_drop_prefix_tokens():
    model = timm.create_model("c2fmae_vit_test", num_classes=0).eval()
    x = torch.randn(3, 3, 64, 64)
    data = [{"image": x[i], "semantic": torch.zeros(16, 16, dtype=torch.long)} for i in range(3)]
    feats, masks = extract_patch_features(model, torch.utils.data.DataLoader(data, batch_size=2))
    tokens = model.forward_features(x)[:, model.num_prefix_tokens :]  # [B, 64, D] after the final norm
    assert feats.shape == (3, 64, 8, 8) and masks.shape == (3, 16, 16)
    assert torch.allclose(feats.flatten(2).transpose(1, 2), tokens, atol=1e-5)


def _half_coloured(n: int = 24) -> list[dict]:
    """The right half is red (label 0) or blue (label 1) and is semantic class 1 + label; left half class 0."""
    g = torch.Generator().manual_seed(0)
    data = []
    for i in range(n):
        label = i % 2
        sem = torch.zeros(16, 16, dtype=torch.long)
        sem[:, 8:] = 1 + label
        img = torch.randn(3, 64, 64, generator=g) * 0.2
        img[0 if label == 0 else 2, :, 32:] += 2.0
        data.append({"image": img, "semantic": sem, "label": torch.tensor(label)})
    return data


def test_run_probes_on_dict_dataset_with_masks():
    data = _half_coloured()
    model = timm.create_model("c2fmae_vit_test", num_classes=0)
    res = run_probes(
        model,
        data[:16],
        data[16:],
        ("knn", "linear", "seg"),
        batch_size=8,
        linear_epochs=20,
        seg_epochs=20,
        seg_lr=1e-2,
    )
    assert res["knn"]["top1"] == 1.0 and res["linear"]["top1"] == 1.0
    assert res["seg"]["num_classes"] == 3 and res["seg"]["miou"] > 0.6
    with pytest.raises(ValueError, match="--probes"):
        run_probes(model, data[:4], data[4:8], ("knn", "bogus"))


@pytest.mark.parametrize(
    ("arch", "kwargs", "grid"),
    [("test_vit", {"img_size": 64}, (4, 4)), ("test_resnet", {}, (2, 2))],  # timm's own ViT (cls token) and a CNN
)
def test_probes_on_plain_timm_encoders(arch, kwargs, grid):
    data = _half_coloured()
    model = load_encoder(arch, **kwargs)
    feats, _ = extract_patch_features(model, torch.utils.data.DataLoader(data[:2], batch_size=2))
    assert feats.shape == (2, model.num_features, *grid)
    res = run_probes(model, data[:16], data[16:], ("knn", "seg"), batch_size=8, seg_epochs=20, seg_lr=1e-2)
    assert res["knn"]["top1"] == 1.0 and res["feature_dim"] == model.num_features
    assert res["seg"]["miou"] > 0.5  # left / right halves on a coarse grid


def test_eval_cli_image_folder_writes_json(image_root, tmp_path):
    out = tmp_path / "res" / "eval.json"
    args = _parse(
        add_eval_arguments,
        [
            "--model",
            "c2fmae_vit_test",
            "--data",
            str(image_root),
            "--probes",
            "knn",
            "linear",
            "--k",
            "3",
            "--linear-epochs",
            "20",
            "--batch-size",
            "8",
            "--output",
            str(out),
        ],
    )
    assert eval_main(args) == 0
    res = json.loads(out.read_text())
    assert res["num_train"] == 12 and res["num_val"] == 8 and res["feature_dim"] == 64
    assert res["knn"]["top1"] == 1.0  # colour classes are separable even for a random-init ViT
    assert 0.0 <= res["linear"]["top1"] <= 1.0
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]  # no temp file left behind


def test_finetune_cli_image_folder(image_root, tmp_path):
    out = tmp_path / "ft.json"
    args = _parse(
        add_finetune_arguments,
        [
            "--model",
            "c2fmae_vit_test",
            "--data",
            str(image_root),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--lr",
            "1e-3",
            "--layer-decay",
            "0.5",
            "--output",
            str(out),
            "--save",
            str(tmp_path / "ft"),
        ],
    )
    assert finetune_main(args) == 0
    res = json.loads(out.read_text())
    assert res["num_classes"] == 2 and len(res["val"]) == 2
    assert sorted(set(res["lr_scales"])) == pytest.approx([0.125, 0.25, 0.5, 1.0])
    assert timm.create_model(f"local-dir:{tmp_path / 'ft'}", pretrained=True).num_classes == 2


def test_eval_data_errors_name_the_path(image_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="--data .*nowhere"):
        eval_datasets(str(tmp_path / "nowhere"))
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="missing split folder .*val"):
        eval_datasets(str(tmp_path / "only_train"), timm.create_model("c2fmae_vit_test"))
    (tmp_path / "only_train" / "val" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="image folder .*only_train/train.*no valid file"):
        eval_datasets(str(tmp_path / "only_train"), timm.create_model("c2fmae_vit_test"))
    with pytest.raises(SystemExit):  # argparse rejects a non-positive k
        _parse(add_eval_arguments, ["--model", "x", "--data", str(image_root), "--k", "0"])


def test_export_finetunes_the_timm_train_py_way(tmp_path):
    """What timm's train.py does with `--model local-dir:DIR --pretrained --num-classes N --layer-decay`."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from c2fmae.hub import export

    src = timm.create_model("c2fmae_vit_test", num_classes=0)
    export(src.state_dict(), tmp_path / "export", arch="c2fmae_vit_test")
    model = timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True, num_classes=3, drop_path_rate=0.1)
    assert model.num_classes == 3
    assert torch.equal(model.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)  # weights loaded, head new
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    sched = CosineLRScheduler(opt, t_initial=10, warmup_t=0)
    sched.step(0)
    assert sorted({g["lr_scale"] for g in opt.param_groups}) == pytest.approx([0.125, 0.25, 0.5, 1.0])
    assert all(g["lr"] == pytest.approx(1e-3 * g["lr_scale"]) for g in opt.param_groups)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert not torch.equal(model.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)


def _write_cls_shard(path, samples):
    """A webdataset classification shard written with plain tarfile: KEY.png + KEY.cls members."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for key, img, label in samples:
            for name, data in ((f"{key}.png", _png(img)), (f"{key}.cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _png(img):
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_eval_and_finetune_from_classification_shards(image_root, tmp_path):
    """`--data wds:DIR`: the same colour classes as the ImageFolder, split over two shards and two workers."""
    from torchvision.datasets import ImageFolder

    for split, shards in (("train", 2), ("val", 1)):
        folder = ImageFolder(str(image_root / split))
        samples = [(f"{split}{i:03d}", np.asarray(Image.open(p)), y) for i, (p, y) in enumerate(folder.samples)]
        for s in range(shards):
            (tmp_path / split).mkdir(exist_ok=True)
            _write_cls_shard(tmp_path / split / f"shard-{s:06d}.tar", samples[s::shards])
    out = tmp_path / "eval.json"
    common = ["--model", "c2fmae_vit_test", "--data", f"wds:{tmp_path / 'train'}", "--val-data", str(tmp_path / "val")]
    args = _parse(
        add_eval_arguments,
        [*common, "--probes", "knn", "--k", "3", "--batch-size", "5", "--workers", "2", "--output", str(out)],
    )
    assert eval_main(args) == 0
    res = json.loads(out.read_text())
    assert res["num_train"] == 12 and res["num_val"] == 8  # each sample once, although 2 workers read
    assert res["knn"]["top1"] == 1.0  # as on the ImageFolder
    args = _parse(add_finetune_arguments, [*common, "--epochs", "1", "--batch-size", "4", "--output", str(out)])
    assert finetune_main(args) == 0
    res = json.loads(out.read_text())
    assert res["num_classes"] == 2 and len(res["val"]) == 1

    _write_cls_shard(tmp_path / "bad.tar", [("k0", np.zeros((8, 8, 3), np.uint8), "x")])
    with pytest.raises(ValueError, match=r"bad.tar:k0.cls: not an integer"):
        list(LabelledShards(str(tmp_path / "bad.tar")))
    with pytest.raises(ValueError, match="--val-data URL"):
        eval_datasets(f"wds:{tmp_path / 'train'}", timm.create_model("c2fmae_vit_test"))


def test_seg_probe_from_c2fmae_shards(tmp_path):
    """`--data shards:DIR --probes seg`: synthetic scenes written as (image, semantic, instance) shards."""
    from c2fmae.data import SyntheticScenes
    from c2fmae.data.shards import write_shards

    for split in ("train", "val"):
        write_shards(SyntheticScenes(12, 64, split=split).iter_raw(), tmp_path / split, 6, progress=False)
    out = tmp_path / "seg.json"
    argv = ["--model", "c2fmae_vit_test", "--data", f"shards:{tmp_path / 'train'}", "--val-data", str(tmp_path / "val")]
    args = _parse(add_eval_arguments, [*argv, "--probes", "seg", "--seg-classes", "10", "--seg-epochs", "3"])
    args.output = str(out)
    assert eval_main(args) == 0
    res = json.loads(out.read_text())
    assert res["num_train"] == 12 and res["num_val"] == 12
    assert res["seg"]["num_classes"] == 10 and 0.0 < res["seg"]["miou"] <= 1.0
    assert len(res["seg"]["iou"]) == 10

""" OpenMMLab integration: C2FMAE ViT backbone, SimpleFPN, layer-decay optimizer, shipped configs

In an MMDetection / MMSegmentation config:

    custom_imports = dict(imports=['c2fmae.mm'], allow_failed_imports=False)
    model = dict(backbone=dict(type='C2FMAEViT', model_name='c2fmae_vit_base', ...), ...)

Everything registers into mmengine's root registries (MODELS, OPTIM_WRAPPER_CONSTRUCTORS), which
mmdet's and mmseg's registries both search as their parent. Shipped configs:

    from c2fmae.mm import config_path, list_configs
    cfg = mmengine.Config.fromfile(config_path("mask-rcnn_c2fmae-vit-b_simplefpn_lsj-100e_coco"))
"""
from __future__ import annotations

from pathlib import Path

try:
    import mmcv  # noqa: F401
    import mmengine  # noqa: F401
except ImportError as e:  # pragma: no cover - message for users without the extra
    raise ImportError(
        f"c2fmae.mm needs the OpenMMLab extra ({e}): pip install 'c2fmae[mm]' and run `bash tools/install_mm.sh` "
        "(builds mmcv 2.1.0 against your torch)") from e

import c2fmae  # noqa: F401,E402  (registers the c2fmae_vit_* timm models)

from .backbone import C2FMAEViT, read_encoder_weights  # noqa: E402
from .checkpoint import is_run_output  # noqa: E402  (registers the checkpoint loaders)
from .neck import LN2d, SimpleFPN  # noqa: E402
from .optim import C2FMAELayerDecayOptimizerConstructor  # noqa: E402

__all__ = [
    "C2FMAEViT", "SimpleFPN", "LN2d", "C2FMAELayerDecayOptimizerConstructor", "read_encoder_weights",
    "is_run_output", "config_path", "list_configs", "CONFIG_DIR",
]

CONFIG_DIR = Path(__file__).parent / "configs"


def list_configs() -> list[str]:
    """Names of the configs shipped in `c2fmae/mm/configs`."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))


def config_path(name: str) -> str:
    """Path of a shipped config by name (with or without `.py`), for `mmengine.Config.fromfile`."""
    path = CONFIG_DIR / (name if name.endswith(".py") else f"{name}.py")
    if not path.is_file():
        raise FileNotFoundError(f"no shipped c2fmae.mm config '{name}'; available: {list_configs()}")
    return str(path)

"""Data: joint (image, semantic, instance) transforms, datasets, WebDataset shards, synthetic scenes.

    from c2fmae.data import DataConfig, build_dataset, worker_init_fn
    ds = build_dataset(DataConfig(img_size=96))          # synthetic scenes, the embedded default
    loader = DataLoader(ds, batch_size=32, num_workers=2, worker_init_fn=worker_init_fn)
    batch = next(iter(loader))  # image (B,3,96,96), semantic/instance (B,24,24) long, label (B,)
"""
from .datasets import DataConfig, FolderDataset, build_dataset, build_transform, worker_init_fn
from .io import IGNORE_INDEX, BadSampleError, check_triple, decode_image, decode_mask, encode_mask
from .shards import ShardDataset, expand_urls, iter_shards, write_shard, write_shards
from .synthetic import CLASS_NAMES, SCENE_NAMES, SyntheticScenes, render_scene
from .transforms import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, JointTransform, sample_rng
from .vocab import COCO_PANOPTIC_CLASSES

__all__ = [
    "DataConfig", "FolderDataset", "build_dataset", "build_transform", "worker_init_fn",
    "IGNORE_INDEX", "BadSampleError", "check_triple", "decode_image", "decode_mask", "encode_mask",
    "ShardDataset", "expand_urls", "iter_shards", "write_shard", "write_shards",
    "CLASS_NAMES", "SCENE_NAMES", "SyntheticScenes", "render_scene",
    "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "JointTransform", "sample_rng",
    "COCO_PANOPTIC_CLASSES",
]

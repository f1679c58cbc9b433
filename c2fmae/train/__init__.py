"""Pretraining: typed configs and recipes, the training loop, distributed setup, checkpoints.

    from c2fmae.train import load_config, train
    run_dir = train(load_config("default", ["steps=50"]))
"""
from .config import ConfigError, OptimConfig, TrainConfig, config_from_dict, config_to_dict, load_config
from .engine import train

__all__ = ["ConfigError", "OptimConfig", "TrainConfig", "config_from_dict", "config_to_dict", "load_config",
           "train"]

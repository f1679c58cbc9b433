"""C2FMAE: coarse-to-fine masked autoencoders for ViT pretraining (arXiv 2603.09955).

`import c2fmae` registers the `c2fmae_vit_*` encoders in timm.
"""
from . import models  # noqa: F401  (registers the timm models)
from .models.vit import checkpoint_filter_fn

__version__ = "0.1.0"
__all__ = ["checkpoint_filter_fn", "__version__"]

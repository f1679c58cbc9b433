"""C2FMAE models: the timm-registered encoder and the pretraining model."""
from .vit import ARCH_TO_TIMM, HF_HUB_ORG, SHORT_NAMES, checkpoint_filter_fn, encoder_state_dict

__all__ = ["ARCH_TO_TIMM", "HF_HUB_ORG", "SHORT_NAMES", "checkpoint_filter_fn", "encoder_state_dict"]

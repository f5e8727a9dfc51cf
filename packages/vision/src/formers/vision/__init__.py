"""formers.vision: Vision transformers (T2T-ViT, PiT, CrossViT, Swin, kMaX-DeepLab) on the formers core.

``import formers.vision`` registers every model in the formers registry and in timm's (as ``formers_<name>``)::

    import formers.vision, timm
    model = formers.vision.create_model("pit_ti", num_classes=10, checkpoint_path="pit_ti_730.pth")
    same_arch = timm.create_model("formers_pit_ti", num_classes=10)
"""

from formers.vision.api import FeatureMapsModel, create_model, list_models, resolve_pretrained_cfg
from formers.vision.checkpoint import CheckpointError, load_checkpoint, load_into
from formers.vision.models import VISION_MODELS, register_vision_model, vision_entry
from formers.vision.models._registry import make_cfg
from formers.vision.timm_compat import TIMM_PREFIX, formers_name, register_timm_models, timm_name

register_timm_models()

__all__ = [
    "create_model",
    "list_models",
    "resolve_pretrained_cfg",
    "FeatureMapsModel",
    "load_checkpoint",
    "load_into",
    "CheckpointError",
    "VISION_MODELS",
    "register_vision_model",
    "vision_entry",
    "make_cfg",
    "TIMM_PREFIX",
    "timm_name",
    "formers_name",
    "register_timm_models",
]

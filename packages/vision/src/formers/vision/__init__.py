"""formers.vision: Vision transformers (T2T-ViT, PiT, CrossViT, Swin, kMaX-DeepLab) on the formers core.

``import formers.vision`` registers every model in the formers registry (domain ``vision``) and, once, in timm's
(as ``formers_<name>``)::

    import formers.vision, timm
    model = formers.vision.create_model("pit_ti_224", num_classes=10, checkpoint_path="pit_ti_730.pth")
    same_arch = timm.create_model("formers_pit_ti_224", num_classes=10)

:func:`create_model` is :func:`formers.core.builder.build_model` restricted to the vision models; checkpoint
reading and loading (:func:`load_checkpoint`, :func:`load_into`, :class:`CheckpointError`) come from
:mod:`formers.core.weights`.
"""

from formers.core.features import FeatureMapsModel
from formers.core.weights import CheckpointError, load_checkpoint, load_into
from formers.vision.api import create_model, list_models, resolve_pretrained_cfg
from formers.vision.models import make_cfg
from formers.vision.timm_compat import TIMM_PREFIX, formers_name, register_timm_models, timm_name

register_timm_models()  # the models imported above (formers.vision.models) reach timm here, once

__all__ = [
    "create_model",
    "list_models",
    "resolve_pretrained_cfg",
    "FeatureMapsModel",
    "load_checkpoint",
    "load_into",
    "CheckpointError",
    "make_cfg",
    "TIMM_PREFIX",
    "timm_name",
    "formers_name",
    "register_timm_models",
]

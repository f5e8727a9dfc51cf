"""Vision model families (a file per family); importing this module registers every named configuration."""

from formers.vision.models import crossvit, pit, swin, t2t_vit  # noqa: F401  (registration side effects)
from formers.vision.models._registry import VISION_MODELS, register_vision_model, vision_entry

__all__ = ["VISION_MODELS", "register_vision_model", "vision_entry"]

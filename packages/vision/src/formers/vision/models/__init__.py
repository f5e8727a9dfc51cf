"""Vision model families (a file per family); importing this module registers every named configuration in the
formers registry (domain ``vision``)."""

from formers.vision.models import crossvit, kmax, pit, swin, t2t_vit  # noqa: F401  (registration side effects)
from formers.vision.models._cfg import make_cfg

__all__ = ["make_cfg"]

"""Models that live in core: the base contract and generic encoders shared by the domains."""

from formers.core.models.base import FormersModel, check_input
from formers.core.models.encoder import TransformerClassifier, TransformerEncoder, transformer_classifier

__all__ = ["FormersModel", "check_input", "TransformerEncoder", "TransformerClassifier", "transformer_classifier"]

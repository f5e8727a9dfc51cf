"""Feed-forward blocks of a transformer: the plain two-layer :class:`Mlp` and gated linear units.

Gated hidden-size convention (same as timm's ``SwiGLU``, LLaMA and T5 v1.1; *not* timm's ``GluMlp``, which splits
one ``hidden_features`` projection in two halves): the gate and the value projections **each** have
``hidden_features`` outputs, so a gated MLP holds ``3 · dim · hidden`` weights against ``2 · dim · hidden`` for
:class:`Mlp`. To match the parameter count of a plain MLP with ratio ``r``, use ``hidden = 2/3 · r · dim`` (LLaMA).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from formers.core.layers.create import LayerType, get_act_layer
from formers.core.layers.drop import Dropout

__all__ = ["Mlp", "GluMlp", "GEGLU", "SwiGLU", "get_mlp_layer"]


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))`` followed by dropout: the transformer feed-forward block (Vaswani et al. 2017).

    Args:
        in_features: input channels.
        hidden_features: hidden channels (default ``in_features``).
        out_features: output channels (default ``in_features``).
        act_layer: activation name or constructor.
        bias: add biases to both linear layers.
        drop: dropout after the activation and after ``fc2``.

    Shapes:
        - input: ``(*, in_features)``
        - output: ``(*, out_features)``
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: LayerType = "gelu",
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = get_act_layer(act_layer)()
        self.drop1 = Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class GluMlp(nn.Module):
    """Gated linear unit MLP: ``fc2(drop(act(fc1_g(x)) * fc1_x(x)))`` followed by dropout (Shazeer 2020).

    ``fc1_g`` (gate) and ``fc1_x`` (value) each map to ``hidden_features`` channels (see the module docstring).
    With the default sigmoid this is the original GLU (Dauphin et al. 2017); :class:`GEGLU` and :class:`SwiGLU`
    fix the activation to GELU and SiLU.

    Args:
        in_features: input channels.
        hidden_features: hidden channels of the gate and of the value, each (default ``in_features``).
        out_features: output channels (default ``in_features``).
        act_layer: activation applied to the gate.
        bias: add biases to the three linear layers.
        drop: dropout after the gating and after ``fc2``.

    Shapes:
        - input: ``(*, in_features)``
        - output: ``(*, out_features)``
    """

    default_act: LayerType = "sigmoid"

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: LayerType | None = None,
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1_g = nn.Linear(in_features, hidden_features, bias=bias)
        self.fc1_x = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = get_act_layer(act_layer or self.default_act)()
        self.drop1 = Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.act(self.fc1_g(x)) * self.fc1_x(x)
        return self.drop2(self.fc2(self.drop1(hidden)))


class GEGLU(GluMlp):
    """:class:`GluMlp` with a GELU gate: ``fc2(gelu(fc1_g(x)) * fc1_x(x))`` (Shazeer 2020).

    Shapes:
        - input: ``(*, in_features)``
        - output: ``(*, out_features)``
    """

    default_act = "gelu"


class SwiGLU(GluMlp):
    """:class:`GluMlp` with a SiLU (Swish) gate: ``fc2(silu(fc1_g(x)) * fc1_x(x))`` (Shazeer 2020; PaLM, LLaMA).

    Shapes:
        - input: ``(*, in_features)``
        - output: ``(*, out_features)``
    """

    default_act = "silu"


_MLP_LAYERS: dict[str, type[nn.Module]] = {"mlp": Mlp, "glu": GluMlp, "geglu": GEGLU, "swiglu": SwiGLU}


def get_mlp_layer(mlp_layer: str | Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """The MLP constructor for a name (``"mlp"``, ``"glu"``, ``"geglu"``, ``"swiglu"``) or a callable.

    A custom constructor is called as ``mlp_layer(in_features=, hidden_features=, bias=, drop=[, act_layer=])``.
    """
    if isinstance(mlp_layer, str):
        if mlp_layer.lower() not in _MLP_LAYERS:
            raise ValueError(f"unknown mlp_layer {mlp_layer!r}; choose one of {sorted(_MLP_LAYERS)} or pass a class")
        return _MLP_LAYERS[mlp_layer.lower()]
    if not callable(mlp_layer):
        raise TypeError(f"mlp_layer must be a name or a callable, got {type(mlp_layer).__name__}")
    return mlp_layer

"""Fourier Neural Operator baselines: neuraloperator's ``FNO`` (Li et al., ICLR 2021) on the formers-pde grid contract.

This is the model a formers-pde user would otherwise train with neuraloperator, so every pipeline trains it beside the
transformers on the same data, budget and loss. Nothing of the FNO is re-implemented here: the wrapper only moves the
channels (formers-pde grids are channels-last ``(B, *spatial, C)``, neuraloperator's are channels-first) and states the
configurations. neuraloperator appends the grid coordinates itself (``positional_embedding="grid"``, on ``[0, 1]``
per axis), so, like the transformers, the model takes any resolution; the number of Fourier modes kept per axis must
not exceed ``n // 2 + 1`` of the grid it is given.

neuraloperator is an optional dependency (``pip install formers-pde[fno]``): without it the names stay registered and
building one raises an ``ImportError`` that says what to install.

Configurations (``FNO(n_modes, hidden_channels, n_layers=4)``, GELU, no channel MLP in the paper's FNO1d/2d but
neuraloperator 2.0's defaults otherwise, which its users get):

- ``fno_burgers``: 1-D, 16 modes, width 64 (FNO paper's Burgers setting);
- ``fno_darcy``: 2-D, 12 x 12 modes, width 32 (FNO paper's Darcy setting);
- ``fno_kolmogorov``: 2-D, 12 x 12 modes, width 32, ``T_in`` frames in, ``T_out`` out.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from formers.core.layers._checks import check_positive
from formers.core.models import FormersModel, check_input
from formers.core.registry import register_model

__all__ = ["FNOGrid", "fno_burgers", "fno_darcy", "fno_kolmogorov"]

_PAPER = "Li et al. 2021, Fourier Neural Operator for Parametric PDEs (neuraloperator 2.0 FNO)"


def _neuralop_fno() -> type:
    try:
        from neuralop.models import FNO
    except ImportError as err:  # neuraloperator or one of its own dependencies (tensorly) is missing
        raise ImportError(
            f"the FNO baselines need neuraloperator: `pip install 'formers-pde[fno]'` ({type(err).__name__}: {err})"
        ) from err
    return FNO


class FNOGrid(FormersModel):
    """neuraloperator's ``FNO`` on channels-last grids ``(B, *spatial, in_channels) -> (B, *spatial, out_channels)``.

    Args:
        n_modes: Fourier modes kept per spatial axis (its length is the number of spatial axes).
        hidden_channels: width of the spectral layers.
        in_channels: input channels (the data module passes them).
        out_channels: output channels.
        n_layers: number of Fourier layers.
        **fno_kwargs: any other ``neuralop.models.FNO`` argument.
    """

    def __init__(
        self,
        n_modes: Sequence[int] = (16,),
        hidden_channels: int = 64,
        in_channels: int = 1,
        out_channels: int = 1,
        n_layers: int = 4,
        **fno_kwargs: Any,
    ) -> None:
        super().__init__()
        check_positive(
            "FNOGrid", hidden_channels=hidden_channels, in_channels=in_channels, out_channels=out_channels,
            n_layers=n_layers,
        )  # fmt: skip
        n_modes = tuple(int(m) for m in n_modes)
        if not n_modes or any(m < 1 for m in n_modes):
            raise ValueError(f"FNOGrid: n_modes must be positive integers, one per spatial axis, got {n_modes}")
        self.spatial_dims, self.n_modes = len(n_modes), n_modes
        self.in_channels, self.out_channels = in_channels, out_channels
        self.fno = _neuralop_fno()(
            n_modes=n_modes,
            hidden_channels=hidden_channels,
            in_channels=in_channels,
            out_channels=out_channels,
            n_layers=n_layers,
            **fno_kwargs,
        )
        # neuraloperator's BaseModel.state_dict adds a '_metadata' entry holding its constructor arguments (Python
        # functions such as F.gelu): a checkpoint with it cannot be loaded safely (weights_only=True). The plain
        # nn.Module state dict holds tensors only; the configuration lives in the formers config instead.
        self.fno.state_dict = types.MethodType(nn.Module.state_dict, self.fno)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        channels_first = x.movedim(-1, 1)
        return self.fno(channels_first).movedim(1, -1)

    def _check(self, x: Tensor) -> None:
        axes = ", ".join(["n"] * self.spatial_dims)
        check_input("FNOGrid: x", x, ndim=2 + self.spatial_dims, floating=True, dims=f"(B, {axes}, {self.in_channels})")
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"FNOGrid: x must have {self.in_channels} channels last, got shape {tuple(x.shape)}")
        too_small = [n for n, m in zip(x.shape[1:-1], self.n_modes, strict=True) if n // 2 + 1 < m]
        if too_small:
            raise ValueError(
                f"FNOGrid: a grid of {tuple(x.shape[1:-1])} points holds fewer Fourier modes than the {self.n_modes} "
                "this model keeps; give a finer grid"
            )

    def example_inputs(self, batch_size: int = 2) -> dict[str, Tensor]:
        sizes = [2 * m for m in self.n_modes]
        return {"x": torch.randn(batch_size, *sizes, self.in_channels, device=self.device)}

    def expected_output_shape(self, batch_size: int = 2) -> tuple[int, ...]:
        return (batch_size, *[2 * m for m in self.n_modes], self.out_channels)


_TEST_1D = {"hidden_channels": 8, "n_modes": (4,), "n_layers": 2}
_TEST_2D = {"hidden_channels": 8, "n_modes": (4, 4), "n_layers": 2}


@register_model(paper=_PAPER, test_kwargs=_TEST_1D)
def fno_burgers(**kwargs: Any) -> FNOGrid:
    """1-D FNO for Burgers (16 modes, width 64, 4 layers)."""
    return FNOGrid(**{"n_modes": (16,), "hidden_channels": 64, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_2D)
def fno_darcy(**kwargs: Any) -> FNOGrid:
    """2-D FNO for Darcy (12 x 12 modes, width 32, 4 layers)."""
    return FNOGrid(**{"n_modes": (12, 12), "hidden_channels": 32, **kwargs})


@register_model(paper=_PAPER, test_kwargs=_TEST_2D)
def fno_kolmogorov(**kwargs: Any) -> FNOGrid:
    """2-D FNO for the Kolmogorov rollout (12 x 12 modes, width 32, 4 layers; ``T_in`` frames in, ``T_out`` out)."""
    return FNOGrid(**{"n_modes": (12, 12), "hidden_channels": 32, **kwargs})

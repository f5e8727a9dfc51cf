"""Point-cloud batches of operator-learning samples on irregular geometries (the input contract of GNOT).

A **sample** is a dict of tensors:

- ``coords``: ``(n, coord_dim)`` float, the query points (mesh nodes) where the output is wanted;
- ``functions``: a tuple of ``L`` input functions, each a point set ``(m_l, c_l)`` of rows ``(x, f(x))`` (its own points
  and its own number of them, e.g. boundary values on the boundary nodes, a source on every node);
- ``params``: ``(p,)`` float, global parameters θ broadcast to every query point (``(0,)`` when there are none);
- ``target``: ``(n, out_channels)`` float, the output function at ``coords``.

Two batch layouts, both ``(inputs, target)`` with ``inputs`` the keyword arguments of the model's ``forward``:

**Packed** (:func:`pack_point_clouds`, the default of :class:`formers.pde.data.PointCloudDataModule`): the rows of
the samples one after the other, no padding, plus each sample's number of rows:

- ``inputs``: ``coords (ΣN, coord_dim)``, ``query_lengths (B,)`` int64, ``functions`` (tuple of ``(ΣM_l, c_l)``),
  ``function_lengths`` (tuple of ``(B,)`` int64), ``params (B, p)``;
- ``target``: ``{"values": (ΣN, out_channels), "lengths": (B,)}``; the model returns ``(ΣN, out_channels)``.

Lengths rather than FlashAttention's ``cu_seqlens`` (``formers.core.varlen.cu_seqlens_from_lengths`` turns one into
the other): they are what the per-sample metric and the per-sample sums need (segment ids), they need no leading
zero, and a ``(B,)`` tensor is batch-major like ``params``. A batch costs what its samples cost alone: with 8 meshes
of 300..2000 nodes, about a third of a padded batch's rows are padding (GNOT forward + backward, 1 thread: packed
0.74 s, padded 1.24 s, the 8 samples one at a time 0.78 s of CPU time).

**Padded** (:func:`collate_point_clouds`): every sample padded to the largest of each:

- ``inputs``: ``coords (B, N, coord_dim)``, ``query_padding (B, N)``, ``functions`` (tuple of ``(B, M_l, c_l)``),
  ``function_padding`` (tuple of ``(B, M_l)``), ``params (B, p)``;
- ``target``: ``{"values": (B, N, out_channels), "padding": (B, N)}``.

Padding masks follow core's convention: bool, ``True`` = padding (not a real point). Padded rows are zeros; a
correct model never lets them reach a real point (GNOT masks them out of every key/value sum).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["collate_point_clouds", "pack_point_clouds", "pad_rows", "check_sample"]


def pad_rows(rows: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack ``(n_i, c)`` tensors into ``(B, max n_i, c)`` zeros-padded, with the ``(B, max n_i)`` padding mask."""
    if not rows:
        raise ValueError("pad_rows: no tensors to pad")
    longest = max(int(r.shape[0]) for r in rows)
    first = rows[0]
    out = first.new_zeros((len(rows), longest, *first.shape[1:]))
    padding = torch.ones(len(rows), longest, dtype=torch.bool, device=first.device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
        padding[i, : r.shape[0]] = False
    return out, padding


def check_sample(sample: Mapping[str, Any], index: int | str = "?") -> None:
    """Raise a ``ValueError`` naming the sample and the field when a sample breaks the contract above."""
    for key in ("coords", "functions", "target"):
        if key not in sample:
            raise ValueError(f"point-cloud sample {index}: missing {key!r} (has {sorted(sample)})")
    coords, target = sample["coords"], sample["target"]
    if coords.ndim != 2 or target.ndim != 2 or coords.shape[0] != target.shape[0]:
        raise ValueError(
            f"point-cloud sample {index}: coords {tuple(coords.shape)} and target {tuple(target.shape)} must be "
            "(n, coord_dim) and (n, out_channels) with the same n"
        )
    if coords.shape[0] == 0:
        raise ValueError(f"point-cloud sample {index}: no query points")
    for j, f in enumerate(sample["functions"]):
        if f.ndim != 2 or f.shape[0] == 0:
            raise ValueError(
                f"point-cloud sample {index}: input function {j} must be (m, c) with m > 0, got {tuple(f.shape)}"
            )


def _check_batch(samples: Sequence[Mapping[str, Any]], caller: str) -> int:
    """Check every sample; return the (common) number of input functions."""
    if not samples:
        raise ValueError(f"{caller}: empty batch")
    for i, s in enumerate(samples):
        check_sample(s, i)
    num_functions = {len(s["functions"]) for s in samples}
    if len(num_functions) != 1:
        raise ValueError(f"{caller}: samples have different numbers of input functions {num_functions}")
    return num_functions.pop()


def _params(samples: Sequence[Mapping[str, Any]], dtype: torch.dtype) -> Tensor:
    reference = samples[0]["coords"]
    return torch.stack([torch.as_tensor(s.get("params", reference.new_zeros(0)), dtype=dtype) for s in samples])


def collate_point_clouds(samples: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Pad a list of samples into one batch (the padded layout of the module docstring)."""
    num_functions = _check_batch(samples, "collate_point_clouds")
    coords, query_padding = pad_rows([s["coords"] for s in samples])
    values, _ = pad_rows([s["target"] for s in samples])
    functions, function_padding = [], []
    for j in range(num_functions):
        f, pad = pad_rows([s["functions"][j] for s in samples])
        functions.append(f)
        function_padding.append(pad)
    inputs = {
        "coords": coords,
        "query_padding": query_padding,
        "functions": tuple(functions),
        "function_padding": tuple(function_padding),
        "params": _params(samples, coords.dtype),
    }
    return inputs, {"values": values, "padding": query_padding}


def _lengths(rows: Sequence[Tensor]) -> Tensor:
    return torch.tensor([int(r.shape[0]) for r in rows], dtype=torch.int64)


def pack_point_clouds(samples: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Concatenate a list of samples into one padding-free batch (the packed layout of the module docstring)."""
    num_functions = _check_batch(samples, "pack_point_clouds")
    coords = torch.cat([s["coords"] for s in samples])
    query_lengths = _lengths([s["coords"] for s in samples])
    functions = tuple(torch.cat([s["functions"][j] for s in samples]) for j in range(num_functions))
    function_lengths = tuple(_lengths([s["functions"][j] for s in samples]) for j in range(num_functions))
    inputs = {
        "coords": coords,
        "query_lengths": query_lengths,
        "functions": functions,
        "function_lengths": function_lengths,
        "params": _params(samples, coords.dtype),
    }
    return inputs, {"values": torch.cat([s["target"] for s in samples]), "lengths": query_lengths.clone()}

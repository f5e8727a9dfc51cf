"""ProbSparse self-attention (Informer, Zhou et al., AAAI 2021, §3.1) and Informer's attention layer.

Only the ``u = c·⌈ln L_Q⌉`` "active" queries attend; they are the queries with the largest sparsity measurement
``M(q) = max_j q·k_j − Σ_j q·k_j / L_K``, estimated on ``U = c·⌈ln L_K⌉`` randomly sampled keys per query (one key
set per query position, shared across batch and heads, redrawn every call; the sum runs over the sampled keys but is
divided by the full ``L_K``: the reference's estimator, Informer2020 #211). The lazy queries get ``mean(V)``, or in
the causal (decoder) variant ``cumsum(V)`` (not a cumulative mean: a reference quirk kept on purpose). Matches
Informer2020 ``models/attn.py``; its ``.squeeze(-2)`` is kept (TSLib's bare ``.squeeze()`` mixes the samples of a
batch when ``n_heads = 1``).

The selection scores are computed without gradient (only their top-u *indices* are used, as in the reference), and,
when ``L_K <= U·head_dim`` (every practical Informer configuration) from the dense ``Q·Kᵀ`` product, which moves
fewer bytes than materialising the ``(B, H, L_Q, U, D)`` sampled keys. The active queries attend through
:func:`formers.core.attention.attention`.

Export: the seeded eval sample depends only on ``(seed, L_Q, L_K, U)``, so :class:`InformerAttention` draws it once
per length (:meth:`InformerAttention.prepare_eval_sample`, which :class:`~formers.timeseries.models.informer.Informer`
calls for its lengths when it is built) and reuses the cached indices: no ``torch.Generator`` is created inside
``forward``, so ``torch.export`` / ONNX capture an eval-mode Informer with the sample as a constant.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from formers.core.attention import AttentionBackendMixin, attention

__all__ = ["prob_sparse_sizes", "sample_keys", "prob_attention", "InformerAttention"]


def prob_sparse_sizes(factor: int, len_q: int, len_k: int) -> tuple[int, int]:
    """``(u, U)``: active queries ``c·⌈ln L_Q⌉`` and sampled keys per query ``c·⌈ln L_K⌉``, each within ``[1, L]``."""
    u = min(len_q, max(1, factor * math.ceil(math.log(len_q))))
    n_sample = min(len_k, max(1, factor * math.ceil(math.log(len_k))))
    return u, n_sample


def sample_keys(len_q: int, len_k: int, n_sample: int, generator: torch.Generator | None = None) -> Tensor:
    """Key indices ``(len_q, n_sample)`` drawn with replacement, on the CPU RNG like the reference's ``randint``."""
    return torch.randint(len_k, (len_q, n_sample), generator=generator, device="cpu")


def prob_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    factor: int = 5,
    *,
    causal: bool = False,
    index_sample: Tensor | None = None,
    generator: torch.Generator | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """ProbSparse attention on ``(B, H, L, D)`` tensors; returns ``(B, H, L_Q, D_v)``.

    Args:
        factor: the sampling factor ``c``.
        causal: decoder variant: active query ``i`` sees keys ``j <= i``; lazy queries get ``cumsum(V)``.
        index_sample: the sampled key indices ``(L_Q, U)``; drawn with ``generator`` (default: global RNG) if ``None``.
        scale: score scale, default ``1/√D`` (applied after the selection, as in the reference).
        backend: attention backend of the active queries' softmax attention (see ``formers.core.attention``).
    """
    batch, heads, len_q, head_dim = q.shape
    len_k = k.shape[2]
    if causal and len_q != len_k:
        raise ValueError(f"prob_attention: the causal variant needs L_Q == L_K, got {len_q} and {len_k}")
    n_top, n_sample = prob_sparse_sizes(factor, len_q, len_k)
    if index_sample is None:
        index_sample = sample_keys(len_q, len_k, n_sample, generator)
    index_sample = index_sample.to(q.device)
    with torch.no_grad():  # the measurement only selects indices; no gradient flows through it in the reference
        if len_k <= index_sample.shape[1] * head_dim:
            scores = torch.matmul(q, k.transpose(-2, -1))
            qk_sample = scores.gather(-1, index_sample.expand(batch, heads, len_q, -1))
        else:
            k_sample = k[:, :, index_sample]  # (B, H, L_Q, U, D)
            qk_sample = torch.matmul(q.unsqueeze(-2), k_sample.transpose(-2, -1)).squeeze(-2)  # never a bare squeeze
        sparsity = qk_sample.amax(-1) - qk_sample.sum(-1) / len_k
        top = sparsity.topk(n_top, dim=-1, sorted=False).indices  # (B, H, u)
    q_reduce = q.gather(2, top[..., None].expand(-1, -1, -1, head_dim))
    attn_bias = None
    if causal:  # ProbMask: the active query at position i keeps keys j <= i
        future = torch.arange(len_k, device=q.device) > top[..., None]  # (B, H, u, L_K)
        attn_bias = torch.zeros(future.shape, dtype=q.dtype, device=q.device).masked_fill_(future, float("-inf"))
    active = attention(q_reduce, k, v, attn_bias=attn_bias, scale=scale, backend=backend)
    if causal:
        context = v.cumsum(dim=2)
    else:
        context = v.mean(dim=2, keepdim=True).expand(-1, -1, len_q, -1)
    return context.scatter(2, top[..., None].expand(-1, -1, -1, v.shape[-1]), active.to(context.dtype))


class InformerAttention(AttentionBackendMixin, nn.Module):
    """Informer's ``AttentionLayer``: q/k/v/out projections around ProbSparse (``attn='prob'``) or full attention.

    ``mix=True`` reproduces Informer2020's decoder self-attention output layout: the ``(B, H, L, D)`` context is
    reshaped to ``(B, L, H·D)`` *without* moving the heads next to the features (the deliberate "mix",
    Informer2020 #229). In eval mode the ProbSparse key sample is the draw of a generator seeded with
    ``eval_sample_seed`` (the same indices on every call, drawn once per length and cached, which keeps generators out
    of ``forward`` for ``torch.export``), so predictions are deterministic and batch-consistent; the reference redraws
    from the global RNG in eval too (``eval_sample_seed=None`` restores that). Training always uses the global RNG.

    Shapes:
        - x: ``(B, L, d_model)``; context: ``(B, S, d_model)`` or ``None`` (self-attention)
        - output: ``(B, L, d_model)``
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        attn: str = "prob",
        *,
        causal: bool = False,
        mix: bool = False,
        factor: int = 5,
        dropout: float = 0.0,
        eval_sample_seed: int | None = 0,
    ) -> None:
        super().__init__()
        if attn not in ("prob", "full"):
            raise ValueError(f"InformerAttention: attn must be 'prob' or 'full', got {attn!r}")
        if d_model % n_heads:
            raise ValueError(f"InformerAttention: d_model {d_model} is not divisible by n_heads {n_heads}")
        self.attn, self.causal, self.mix, self.factor = attn, causal, mix, factor
        self.n_heads, self.dropout, self.eval_sample_seed = n_heads, dropout, eval_sample_seed
        self.query_projection = nn.Linear(d_model, d_model)
        self.key_projection = nn.Linear(d_model, d_model)
        self.value_projection = nn.Linear(d_model, d_model)
        self.out_projection = nn.Linear(d_model, d_model)

        # (seed, factor, L_Q, L_K) -> the seeded eval key sample (L_Q, U): drawn once, outside any traced forward
        self._eval_samples: dict[tuple[int, int, int, int], Tensor] = {}

    def prepare_eval_sample(self, len_q: int, len_k: int) -> Tensor | None:
        """The seeded eval-mode key sample for these lengths (cached), or ``None`` when eval redraws (no seed) or
        the layer is full attention. Exactly ``sample_keys(..., torch.Generator().manual_seed(eval_sample_seed))``."""
        if self.attn != "prob" or self.eval_sample_seed is None:
            return None
        key = (int(self.eval_sample_seed), self.factor, len_q, len_k)
        if key not in self._eval_samples:
            if torch.compiler.is_compiling() or torch.compiler.is_exporting():
                raise RuntimeError(
                    f"InformerAttention: no eval key sample prepared for L_Q={len_q}, L_K={len_k} (seed "
                    f"{self.eval_sample_seed}); run the model once eagerly or call prepare_eval_sample before export"
                )
            _, n_sample = prob_sparse_sizes(self.factor, len_q, len_k)
            generator = torch.Generator().manual_seed(self.eval_sample_seed)
            self._eval_samples[key] = sample_keys(len_q, len_k, n_sample, generator)
        return self._eval_samples[key]

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.n_heads, -1).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None, keep_last: int | None = None) -> Tensor:
        """``keep_last``: return only the last ``keep_last`` positions; every position still takes part as query (the
        ProbSparse query selection and the mix layout see all of them), only the output projection is spared."""
        context = x if context is None else context
        q = self._heads(self.query_projection(x))
        k = self._heads(self.key_projection(context))
        v = self._heads(self.value_projection(context))
        if self.attn == "prob":
            index = None if self.training else self.prepare_eval_sample(q.shape[2], k.shape[2])
            out = prob_attention(q, k, v, self.factor, causal=self.causal, index_sample=index, backend=self.backend)
        else:  # the reference's FullAttention: dropout on the probabilities, top-left causal mask (L_Q == L_K)
            dropout_p = self.dropout if self.training else 0.0
            out = attention(q, k, v, causal=self.causal, dropout_p=dropout_p, backend=self.backend)
        batch, length = x.shape[:2]
        out = out.reshape(batch, length, -1) if self.mix else out.transpose(1, 2).reshape(batch, length, -1)
        return self.out_projection(out if keep_last is None else out[:, length - keep_last :])

    def extra_repr(self) -> str:
        return f"attn={self.attn!r}, n_heads={self.n_heads}, causal={self.causal}, mix={self.mix}, factor={self.factor}"

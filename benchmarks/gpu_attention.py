"""Benchmark attention kernels on a CUDA GPU in bf16: ours (Triton) vs torch SDPA vs xformers vs naive.

Cases (forward, and forward+backward w.r.t. q, k, v and the bias):

* ``dense``: ``(batch, heads, L, head_dim)``, no mask.
* ``bias``: plus an additive per-head bias ``(1, heads, L, L)`` with a gradient (relative-position style).
* ``causal``: causal mask.
* ``varlen``: packed sequences with lengths uniform in ``[L/8, L]`` (``cu_seqlens``); SDPA runs one call per
  sequence (``sdpa_loop``) or the padded batch with a key padding mask (``sdpa_padded``); xformers uses a
  ``BlockDiagonalMask``; ours is one Triton launch over the packed batch.

Every candidate is checked against the fp32 reference on the same bf16 inputs (max abs error reported), timed
interleaved after warm-up (``_timing.interleaved_timings`` with CUDA syncs), and reported as median ms and TFLOP/s
(4·L_q·L_k·d per head forward, 2.5x that for the backward; causal halves it). Exits cleanly with a message where
there is no GPU.

Usage::

    python benchmarks/gpu_attention.py --seq-len 1024 4096 --json results/bench/gpu_attention.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from _timing import interleaved_timings, write_json

CASES = ("dense", "bias", "causal", "varlen")


def naive(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, causal: bool = False) -> Tensor:
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if bias is not None:
        scores = scores + bias
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores.float().softmax(-1).to(q.dtype) @ v


def dense_candidates(case: str, q, k, v, bias) -> dict[str, Callable[[], Tensor]]:
    from formers.kernels.triton.attention import triton_attention

    causal = case == "causal"
    b = bias if case == "bias" else None
    cands = {
        "ours_triton": lambda: triton_attention(q, k, v, b, causal),
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=b, is_causal=causal and b is None),
        "naive": lambda: naive(q, k, v, b, causal),
    }
    from formers.kernels.xformers_ops import xformers_attention, xformers_unavailable_reason

    if xformers_unavailable_reason() is None:
        cands["xformers"] = lambda: xformers_attention(q, k, v, b, causal)
    return cands


def varlen_candidates(q, k, v, cu: Tensor, lengths: list[int]) -> dict[str, Callable[[], Tensor]]:
    from formers.kernels.triton.attention import triton_varlen_attention

    max_len = max(lengths)

    def sdpa_loop() -> Tensor:
        outs = [
            F.scaled_dot_product_attention(
                qi.transpose(0, 1)[None], ki.transpose(0, 1)[None], vi.transpose(0, 1)[None]
            )[0].transpose(0, 1)
            for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths), strict=True)
        ]
        return torch.cat(outs)

    idx = torch.cat([torch.arange(n, device=q.device) + i * max_len for i, n in enumerate(lengths)])
    pad = torch.arange(max_len, device=q.device)[None, :] >= torch.tensor(lengths, device=q.device)[:, None]
    pad_bias = torch.zeros(len(lengths), 1, 1, max_len, dtype=q.dtype, device=q.device).masked_fill(
        pad[:, None, None, :], float("-inf")
    )

    def sdpa_padded() -> Tensor:
        def to_padded(t: Tensor) -> Tensor:
            out = t.new_zeros(len(lengths) * max_len, *t.shape[1:]).index_copy(0, idx, t)
            return out.unflatten(0, (len(lengths), max_len)).transpose(1, 2)

        out = F.scaled_dot_product_attention(to_padded(q), to_padded(k), to_padded(v), attn_mask=pad_bias)
        return out.transpose(1, 2).flatten(0, 1)[idx]

    cands = {
        "ours_triton": lambda: triton_varlen_attention(q, k, v, cu, cu, max_seqlen_q=max_len, max_seqlen_k=max_len),
        "sdpa_loop": sdpa_loop,
        "sdpa_padded": sdpa_padded,
    }
    from formers.kernels.varlen import varlen_xformers_attention
    from formers.kernels.xformers_ops import xformers_unavailable_reason

    if xformers_unavailable_reason() is None:
        cands["xformers"] = lambda: varlen_xformers_attention(q, k, v, cu, cu)
    return cands


def _mode(fn: Callable[[], Tensor], mode: str, leaves: list[Tensor]) -> Callable[[], object]:
    if mode == "fwd":

        def fwd() -> Tensor:
            with torch.no_grad():
                return fn()

        return fwd

    def fwd_bwd() -> object:
        out = fn()
        return torch.autograd.grad(out, leaves, torch.ones_like(out), allow_unused=True)

    return fwd_bwd


def bench_case(case: str, args: argparse.Namespace, seq_len: int, device: torch.device) -> dict:
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    heads, dim, dtype = args.heads, args.head_dim, torch.bfloat16
    if case == "varlen":
        lengths = torch.randint(max(1, seq_len // 8), seq_len + 1, (args.batch,), generator=gen).tolist()
        total = sum(lengths)
        q, k, v = (torch.randn(total, heads, dim, generator=gen).to(device, dtype).requires_grad_() for _ in range(3))
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
        cands = varlen_candidates(q, k, v, cu, lengths)
        leaves = [q, k, v]
        flops = sum(4 * n * n * dim * heads for n in lengths)
        with torch.no_grad():
            ref = torch.cat(
                [
                    naive(*(t.float().transpose(0, 1)[None] for t in (qi, ki, vi)))[0].transpose(0, 1)
                    for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths), strict=True)
                ]
            )
    else:
        shape = (args.batch, heads, seq_len, dim)
        q, k, v = (torch.randn(shape, generator=gen).to(device, dtype).requires_grad_() for _ in range(3))
        bias = torch.randn(1, heads, seq_len, seq_len, generator=gen).to(device, dtype).requires_grad_()
        cands = dense_candidates(case, q, k, v, bias)
        leaves = [q, k, v] + ([bias] if case == "bias" else [])
        flops = 4 * args.batch * heads * seq_len * seq_len * dim // (2 if case == "causal" else 1)
        with torch.no_grad():
            ref = naive(q.float(), k.float(), v.float(), bias.float() if case == "bias" else None, case == "causal")
    result: dict = {"flops_fwd": flops}
    errors = {}
    for name, fn in list(cands.items()):
        try:
            with torch.no_grad():
                errors[name] = float((fn().float() - ref).abs().max())
        except Exception as err:  # noqa: BLE001 - a kernel that cannot run this case is reported, not fatal
            result.setdefault("failed", {})[name] = f"{type(err).__name__}: {err}"[:200]
            del cands[name]
    for mode in args.modes:
        fns = {name: _mode(fn, mode, leaves) for name, fn in cands.items()}
        timings = interleaved_timings(fns, repeats=args.repeats, warmup=args.warmup, device=device)
        work = flops * (3.5 if mode == "fwd_bwd" else 1.0)
        result[mode] = {
            name: {
                "median_ms": round(t.median * 1e3, 3),
                "tflops": round(work / t.median / 1e12, 2),
                "max_abs_err": errors[name],
            }
            for name, t in timings.items()
        }
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--modes", nargs="+", choices=("fwd", "fwd_bwd"), default=["fwd", "fwd_bwd"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_attention: no CUDA GPU here; this benchmark times GPU kernels only. Nothing to do.")
        return {"skipped": "no CUDA device"}
    device = torch.device("cuda")
    metrics: dict = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "results": {}}
    print(
        f"{metrics['device']} | torch {torch.__version__} | bf16, batch {args.batch}, heads {args.heads}, "
        f"head_dim {args.head_dim}"
    )
    for seq_len in args.seq_len:
        for case in args.cases:
            res = bench_case(case, args, seq_len, device)
            metrics["results"][f"{case}/L{seq_len}"] = res
            for name, why in res.get("failed", {}).items():
                print(f"  {case:<7} L={seq_len:<6} {name:<12} failed: {why}")
            for mode in args.modes:
                for name, r in res[mode].items():
                    print(
                        f"  {case:<7} L={seq_len:<6} {mode:<8} {name:<12} {r['median_ms']:9.3f} ms "
                        f"{r['tflops']:7.2f} TFLOP/s  err {r['max_abs_err']:.1e}"
                    )
    write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    main()
    sys.exit(0)

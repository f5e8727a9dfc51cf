"""Benchmark padding-free (packed, varlen) batches against padded batches with a key_padding_mask, in one run.

Two tables, each for forward (under ``no_grad``) and forward+backward, fp32:

* ``encoder``: a :class:`~formers.core.models.encoder.TransformerEncoder` (default: 6 layers, d=512, 8 heads, MLP 4x)
  on a seeded batch of sequences with lengths uniform in ``[min_len, max_len]``. ``padded`` runs the padded batch
  with its key_padding_mask; ``padding-free`` packs it (:func:`formers.core.varlen.pack`), runs the encoder on the
  packed tokens with ``cu_seqlens`` and unpacks the output (pack and unpack are inside the timed call). Both outputs
  are compared on the real tokens in the same run.
* ``kernels``: attention alone on the same lengths, packed ``(total, heads, head_dim)``: every varlen CPU path of
  :func:`formers.core.varlen.varlen_attention` vs SDPA on the padded batch with a key padding mask. The dense
  block-mask and nested paths are skipped above ``--dense-max-tokens`` packed tokens (O(total²) memory / very slow).

Candidates are timed interleaved (``_timing.interleaved_timings``); reported: median and min ms, and the ratio
``padded / candidate`` from medians (> 1 = faster than padded) and from minimums. Ratios are the result; absolute
times depend on the machine and its load (reported).

Usage::

    python benchmarks/varlen.py --threads 2 --json results/bench/varlen.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from _timing import Timing, interleaved_timings, load_average, pin_threads, write_json
from formers.core.models.encoder import TransformerEncoder
from formers.core.varlen import pack, unpack, varlen_attention

MODES = ("fwd", "fwd_bwd")
KERNELS = ("sdpa_loop", "sdpa_blockmask", "nested")
DENSE_KERNELS = ("sdpa_blockmask", "nested")


def make_lengths(batch: int, min_len: int, max_len: int, seed: int) -> Tensor:
    """Seeded sequence lengths, uniform in ``[min_len, max_len]``: ``(batch,)`` int64."""
    return torch.randint(min_len, max_len + 1, (batch,), generator=torch.Generator().manual_seed(seed))


def padding_mask(lengths: Tensor) -> Tensor:
    """Bool ``(batch, max(lengths))``, ``True`` = padding (right-padded)."""
    return torch.arange(int(lengths.max()))[None, :] >= lengths[:, None]


def _ms(t: Timing) -> dict[str, float]:
    return {"median_ms": round(t.median * 1e3, 3), "min_ms": round(t.best * 1e3, 3)}


def _mode_fn(forward: Callable[[], Tensor], mode: str, leaves: list[Tensor], grad_out: Tensor) -> Callable[[], object]:
    """Forward under ``no_grad``, or forward + ``autograd.grad`` w.r.t. ``leaves``."""
    if mode == "fwd":

        def run_fwd() -> Tensor:
            with torch.no_grad():
                return forward()

        return run_fwd
    return lambda: torch.autograd.grad(forward(), leaves, grad_out)


# ------------------------------------------------------------------------------------------------------- encoder


def encoder_candidates(
    args: argparse.Namespace, lengths: Tensor
) -> tuple[dict[str, Callable[[], Tensor]], float, list[Tensor], Tensor]:
    """Forward calls of the padded and padding-free encoder, their max abs difference on the real tokens, the
    encoder's parameters and the padding mask.

    Shapes:
        - both calls return the padded output ``(batch, max_len, dim)`` (zeros at padding for padding-free)
    """
    torch.manual_seed(args.seed)
    encoder = TransformerEncoder(args.dim, args.depth, args.heads, mlp_ratio=args.mlp_ratio).eval()
    mask = padding_mask(lengths)
    x = torch.randn(len(lengths), mask.shape[1], args.dim, generator=torch.Generator().manual_seed(args.seed + 1))

    def padded() -> Tensor:
        return encoder(x, key_padding_mask=mask)

    def padding_free() -> Tensor:
        packed, cu_seqlens, max_seqlen, indices = pack(x, mask)
        out = encoder(packed, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        return unpack(out, indices, *mask.shape)

    with torch.no_grad():
        err = (padded() - padding_free())[~mask].abs().max().item()
    return {"padded": padded, "padding-free": padding_free}, err, list(encoder.parameters()), mask


def measure_encoder(args: argparse.Namespace, lengths: Tensor) -> dict[str, dict[str, object]]:
    forwards, err, params, mask = encoder_candidates(args, lengths)
    grad_out = torch.randn(*mask.shape, args.dim).masked_fill(mask[..., None], 0.0)  # padding gets no gradient
    result = {}
    for mode in args.modes:
        fns = {name: _mode_fn(fwd, mode, params, grad_out) for name, fwd in forwards.items()}
        t = interleaved_timings(fns, repeats=args.repeats, warmup=args.warmup, device=torch.device("cpu"))
        result[mode] = {
            "padded": _ms(t["padded"]),
            "padding_free": _ms(t["padding-free"]),
            "speedup": round(t["padded"].median / t["padding-free"].median, 3),
            "speedup_min": round(t["padded"].best / t["padding-free"].best, 3),
            "max_abs_err": err,
        }
    return result


# ------------------------------------------------------------------------------------------------------- kernels


def kernel_candidates(args: argparse.Namespace, lengths: Tensor, q: Tensor, k: Tensor, v: Tensor) -> dict:
    """Attention calls returning packed ``(total, heads, head_dim)``: padded SDPA and the varlen paths."""
    mask = padding_mask(lengths)
    _, cu, max_len, indices = pack(torch.zeros(*mask.shape, 1), mask)
    batch, seq = mask.shape
    bias = torch.zeros(batch, 1, 1, seq).masked_fill_(mask[:, None, None, :], float("-inf"))

    def padded() -> Tensor:
        qp, kp, vp = (unpack(t, indices, batch, seq).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=bias)
        return out.transpose(1, 2).flatten(0, 1)[indices]

    fns = {"padded_sdpa": padded}
    for name in KERNELS:
        if name in DENSE_KERNELS and q.shape[0] > args.dense_max_tokens:
            continue
        fns[name] = lambda name=name: varlen_attention(q, k, v, cu, max_seqlen_q=max_len, backend=name)
    return fns


def measure_kernels(args: argparse.Namespace, lengths: Tensor) -> dict[str, dict[str, object]]:
    head_dim = args.dim // args.heads
    gen = torch.Generator().manual_seed(args.seed + 2)
    total = int(lengths.sum())
    result = {}
    for mode in args.modes:
        grad = mode == "fwd_bwd"
        q, k, v = (torch.randn(total, args.heads, head_dim, generator=gen).requires_grad_(grad) for _ in range(3))
        forwards = kernel_candidates(args, lengths, q, k, v)
        with torch.no_grad():
            ref = forwards["padded_sdpa"]()
            errs = {name: (fn() - ref).abs().max().item() for name, fn in forwards.items()}
        grad_out = torch.randn(total, args.heads, head_dim, generator=gen)
        fns = {name: _mode_fn(fn, mode, [q, k, v], grad_out) for name, fn in forwards.items()}
        t = interleaved_timings(fns, repeats=args.repeats, warmup=args.warmup, device=torch.device("cpu"))
        base = t["padded_sdpa"]
        result[mode] = {
            name: {
                **_ms(t[name]),
                "vs_padded": round(base.median / t[name].median, 3),
                "vs_padded_min": round(base.best / t[name].best, 3),
                "max_abs_err": errs[name],
            }
            for name in fns
        }
    return result


# ------------------------------------------------------------------------------------------------------- report


def print_tables(metrics: dict) -> None:
    env = metrics["env"]
    print(
        f"torch {torch.__version__} | threads {env['threads']} | batch {env['batch']} lengths "
        f"[{env['min_len']}, {env['max_len']}] total {env['total_tokens']} padded {env['padded_tokens']} | "
        f"d={env['dim']} heads={env['heads']} depth={env['depth']} | "
        f"load {env['load_avg_start']}->{env['load_avg_end']}"
    )
    print(f"{'encoder':<10} {'mode':<8} {'padded ms (min)':>18} {'padding-free ms (min)':>24} {'ratio (min)':>14} err")
    for mode, r in metrics["encoder"].items():
        p, f = r["padded"], r["padding_free"]
        print(
            f"{'':<10} {mode:<8} {p['median_ms']:>10.1f} ({p['min_ms']:.1f}) "
            f"{f['median_ms']:>15.1f} ({f['min_ms']:.1f}) "
            f"{r['speedup']:>7.2f}x ({r['speedup_min']:.2f}) {r['max_abs_err']:.1e}"
        )
    print(f"{'kernels':<10} {'mode':<8} {'impl':<15} {'ms (min)':>18} {'vs padded (min)':>16} err")
    for mode, rows in metrics["kernels"].items():
        for name, r in rows.items():
            print(
                f"{'':<10} {mode:<8} {name:<15} {r['median_ms']:>10.1f} ({r['min_ms']:.1f}) "
                f"{r['vs_padded']:>8.2f}x ({r['vs_padded_min']:.2f}) {r['max_abs_err']:.1e}"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-len", type=int, default=64)
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--mlp-ratio", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds, candidates interleaved in each")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls of each candidate first")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--dense-max-tokens", type=int, default=4096, help="skip block-mask/nested kernels above this")
    p.add_argument("--skip-encoder", action="store_true")
    p.add_argument("--skip-kernels", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="write the metrics (ratios and times) here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1 or not 1 <= args.min_len <= args.max_len:
        p.error("need --repeats >= 1, --warmup >= 0, --threads >= 1, 1 <= --min-len <= --max-len")
    return args


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark, print the tables, write the JSON; returns the metrics dict."""
    args = parse_args(argv)
    threads = pin_threads(args.threads)
    lengths = make_lengths(args.batch, args.min_len, args.max_len, args.seed)
    load_start = load_average()
    encoder = {} if args.skip_encoder else measure_encoder(args, lengths)
    kernels = {} if args.skip_kernels else measure_kernels(args, lengths)
    env = {
        "threads": threads,
        "batch": args.batch,
        "min_len": args.min_len,
        "max_len": args.max_len,
        "total_tokens": int(lengths.sum()),
        "padded_tokens": args.batch * int(lengths.max()),
        "dim": args.dim,
        "heads": args.heads,
        "depth": args.depth,
        "repeats": args.repeats,
        "load_avg_start": round(load_start, 2),
        "load_avg_end": round(load_average(), 2),
    }
    metrics = {"env": env, "encoder": encoder, "kernels": kernels}
    print_tables(metrics)
    write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    main()

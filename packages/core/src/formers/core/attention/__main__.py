"""``python -m formers.core.attention``: which attention backends run here, and why the others do not."""

from __future__ import annotations

import platform

import torch

from formers.core.attention import list_backends


def main() -> None:
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    print(f"torch {torch.__version__} | python {platform.python_version()} | CUDA: {cuda}")
    print(f"CPU threads: {torch.get_num_threads()} | CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    infos = list_backends()
    width = max(len(i.name) for i in infos)
    print("attention(q, k, v, backend=...):")
    for info in infos:
        state = "available" if info.available else f"unavailable: {info.reason}"
        print(f"  {info.name:<{width}}  {state}\n  {'':<{width}}  {info.description}")
    # Imported here: formers.core.varlen builds on this package.
    from formers.core.varlen import VARLEN_BACKENDS, varlen_backend_unavailable

    print("varlen_attention(...) / packed layers (cu_seqlens), backend=...:")
    width = max(len(name) for name in VARLEN_BACKENDS)
    for name, impl in VARLEN_BACKENDS.items():
        reason = varlen_backend_unavailable(name)
        state = "available" if reason is None else f"unavailable: {reason}"
        print(f"  {name:<{width}}  {state}\n  {'':<{width}}  {impl.description}")


if __name__ == "__main__":
    main()

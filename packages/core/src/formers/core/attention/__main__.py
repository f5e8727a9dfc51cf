"""``python -m formers.core.attention``: which attention backends run here, what each serves, and why not."""

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
    print("backend=... of attention() (dense) and varlen_attention() / packed layers (cu_seqlens):")
    for info in infos:
        serves = "+".join(kind for kind, has in (("dense", info.dense), ("varlen", info.varlen)) if has)
        state = "available" if info.available else f"unavailable: {info.reason}"
        print(f"  {info.name:<{width}}  {serves:<12}  {state}\n  {'':<{width}}  {'':<12}  {info.description}")


if __name__ == "__main__":
    main()

"""``python -m formers.core.attention``: which attention backends run here, what each serves, and why not."""

from __future__ import annotations

from formers.core.attention import list_backends
from formers.core.machine import format_machine_report


def main() -> None:
    print(format_machine_report())
    infos = list_backends()
    width = max(len(i.name) for i in infos)
    print("backend=... of attention() (dense) and varlen_attention() / packed layers (cu_seqlens):")
    for info in infos:
        serves = "+".join(kind for kind, has in (("dense", info.dense), ("varlen", info.varlen)) if has)
        state = "available" if info.available else f"unavailable: {info.reason}"
        print(f"  {info.name:<{width}}  {serves:<12}  {state}\n  {'':<{width}}  {'':<12}  {info.description}")


if __name__ == "__main__":
    main()

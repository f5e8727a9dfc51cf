"""Record which registered attention backend serves each call: ``spy_backends(monkeypatch)`` wraps every kernel.

Dense calls are recorded as the backend's name, packed (varlen) calls as ``"varlen:<name>"``.
"""

from __future__ import annotations

import dataclasses

import pytest

from formers.core.attention import backends as backends_mod


def _wrap(kernel, label: str, seen: list[str]):
    if kernel is None:
        return None

    def spy(*args, **kwargs):
        seen.append(label)
        return kernel(*args, **kwargs)

    return spy


def spy_backends(monkeypatch: pytest.MonkeyPatch, names: list[str] | None = None) -> list[str]:
    """Wrap the dense and varlen kernels of ``names`` (default: every backend); returns the list calls append to."""
    seen: list[str] = []
    for backend in backends_mod.all_backends():
        if names is not None and backend.name not in names:
            continue
        spied = dataclasses.replace(
            backend,
            kernel=_wrap(backend.kernel, backend.name, seen),
            varlen_kernel=_wrap(backend.varlen_kernel, f"varlen:{backend.name}", seen),
        )
        monkeypatch.setitem(backends_mod._BACKENDS, backend.name, spied)
    return seen

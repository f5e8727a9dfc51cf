"""formers-pde's spine: data modules on solver files, the operator task (relative L2 / H1, rollouts, point clouds),
the CLI's fit / test at several resolutions / predict, and their errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from _cli import run_script
from formers.pde.data import GridDataModule, PointCloudDataModule, TrajectoryDataModule, read_split
from formers.pde.domain import main
from formers.pde.pointcloud import collate_point_clouds
from formers.pde.solvers import burgers
from formers.pde.solvers.store import pack_ragged, write_dataset
from formers.pde.task import OperatorTask, relative_h1, relative_l2

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "pipelines" / "pde" / "tiny.yaml"


@pytest.fixture(scope="module")
def burgers_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pde") / "burgers.h5"
    burgers.main(["--out", str(path), "--train", "16", "--val", "4", "--test", "4", "--grid", "512", "--chunk", "8"])
    return path


# ---------------------------------------------------------------------------------------------- metrics
def test_relative_l2_is_per_sample_and_scale_free() -> None:
    target = torch.randn(3, 20, 2)
    pred = target + 0.1 * torch.randn(3, 20, 2)
    expected = torch.stack([(pred[i] - target[i]).norm() / target[i].norm() for i in range(3)])
    torch.testing.assert_close(relative_l2(pred, target), expected)
    torch.testing.assert_close(relative_l2(7 * pred, 7 * target), expected)


def test_relative_l2_leaves_padding_out() -> None:
    target, pred = torch.randn(2, 10, 1), torch.randn(2, 10, 1)
    padding = torch.zeros(2, 10, dtype=torch.bool)
    padding[0, 6:] = True
    garbage_pred, garbage_target = pred.clone(), target.clone()
    garbage_pred[0, 6:], garbage_target[0, 6:] = 1e6, -1e6
    got = relative_l2(garbage_pred, garbage_target, padding)
    torch.testing.assert_close(got[0], (pred[0, :6] - target[0, :6]).norm() / target[0, :6].norm())


def test_relative_h1_sees_gradients_only() -> None:
    x = torch.linspace(0, 1, 65)
    field = torch.sin(2 * torch.pi * x)[None, :, None]
    assert relative_h1(field + 3.0, field, 1).item() < 1e-6  # a constant shift has no gradient
    assert relative_h1(torch.sin(4 * torch.pi * x)[None, :, None], field, 1).item() > 0.5


# ---------------------------------------------------------------------------------------------- data modules
def test_grid_module_normalises_and_serves_every_test_resolution(burgers_file: Path) -> None:
    data = GridDataModule(str(burgers_file), spatial_dims=1, subsample=4, test_subsamples=[4, 2, 1], batch_size=4)
    assert data.model_sizes() == {"in_channels": 1, "out_channels": 1}
    x, u = data.dataset("train").tensors
    assert x.shape == u.shape == (16, 128, 1)
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-2
    assert abs(u.square().mean().sqrt().item() - 1) < 1e-5  # targets scaled by their rms, not shifted
    assert data.test_names() == ["@128", "@256", "@512"]
    loaders = data.test_dataloader()
    assert [loader.dataset.tensors[0].shape[1] for loader in loaders] == [128, 256, 512]
    # the same physical field at two resolutions: subsampling never re-normalises
    coarse, fine = loaders[0].dataset.tensors[1], loaders[2].dataset.tensors[1]
    torch.testing.assert_close(coarse, fine[:, ::4])
    state = data.state_dict()
    assert state["kind"] == "grid" and state["attrs"]["equation"] and set(state["normalizer"]) == {"mean", "std", "rms"}


def test_missing_file_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"python -m formers.pde.solvers.darcy --out .*darcy.h5"):
        read_split(tmp_path / "darcy.h5", "train", ["a"])
    junk = tmp_path / "burgers.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        read_split(junk, "train", ["a"])


def test_missing_split_or_key_is_named(burgers_file: Path) -> None:
    with pytest.raises(ValueError, match="no 'dev' split"):
        read_split(burgers_file, "dev", ["a"])
    with pytest.raises(ValueError, match=r"lacks \['vorticity'\]"):
        read_split(burgers_file, "train", ["vorticity"])


def _trajectory_file(path: Path) -> Path:
    """Frames of a travelling wave (a real solution of the advection equation), enough for windows and rollouts."""
    grid = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    x, y = np.meshgrid(grid, grid, indexing="ij")
    frames = lambda phase: np.stack([np.sin(x + y - 0.2 * t + phase) for t in range(12)])  # noqa: E731
    splits = {s: {"vorticity": np.stack([frames(p) for p in phases])} for s, phases in
              {"train": [0.0, 1.0, 2.0], "val": [0.5], "test": [1.5, 2.5]}.items()}  # fmt: skip
    return write_dataset(path, splits, {"equation": "advection test frames"})


def test_trajectory_module_windows_and_rollouts(tmp_path: Path) -> None:
    path = _trajectory_file(tmp_path / "waves.h5")
    data = TrajectoryDataModule(str(path), subsample=2, test_subsamples=[2, 1], t_in=3, t_out=1, rollout=4)
    x, y = data.dataset("train").tensors
    assert x.shape == (3 * 9, 8, 8, 3) and y.shape == (3 * 9, 8, 8, 1)  # 12 frames: 9 windows of 3 + 1 each
    torch.testing.assert_close(x[3, ..., :2], x[0, ..., 1:])  # window starts 0 and 1 of trajectory 0 overlap
    vx, vy = data.dataset("val").tensors
    assert vx.shape == (1, 8, 8, 3) and vy.shape == (1, 8, 8, 4)
    assert data.test_names() == ["@8", "@16"]
    assert data.model_sizes() == {"in_channels": 3, "out_channels": 1}
    with pytest.raises(ValueError, match="fewer than t_in"):
        TrajectoryDataModule(str(path), t_in=10, rollout=5).setup()


class _Shift(torch.nn.Module):
    """A stand-in one-frame predictor: the newest frame plus one."""

    out_channels, spatial_dims = 1, 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., -1:] + 1


def test_rollout_feeds_predictions_back() -> None:
    task = OperatorTask("fno_kolmogorov", model_kwargs={"n_modes": [2, 2], "hidden_channels": 4},
                        data_sizes={"in_channels": 3, "out_channels": 1})  # fmt: skip
    task.model = _Shift()
    x = torch.zeros(2, 4, 4, 3)
    out = task.predict_fields(x, frames=5)
    assert out.shape == (2, 4, 4, 5)
    torch.testing.assert_close(out[0, 0, 0], torch.arange(1.0, 6.0))


def _point_cloud_file(path: Path) -> Path:
    """Ragged samples of the harmonic function u = x^2 - y^2 + c on point sets of different sizes."""
    rng = np.random.default_rng(0)
    splits = {}
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        coords, boundary, source, target, params = [], [], [], [], []
        for _ in range(count):
            n = int(rng.integers(8, 30))
            xy = rng.uniform(-1, 1, size=(n, 2))
            c = rng.uniform(0, 1)
            u = xy[:, 0] ** 2 - xy[:, 1] ** 2 + c
            coords.append(xy)
            boundary.append(np.column_stack([xy[:4], u[:4]]))
            source.append(np.column_stack([xy, np.zeros(n)]))
            target.append(u[:, None])
            params.append([c])
        values, offsets = pack_ragged(coords)
        splits[split] = {"coords": values, "offsets": offsets, "target": pack_ragged(target)[0],
                         "params": np.asarray(params)}  # fmt: skip
        for name, rows in (("boundary", boundary), ("source", source)):
            splits[split][f"f_{name}"], splits[split][f"f_{name}_offsets"] = pack_ragged(rows)
    return write_dataset(path, splits, {"equation": "harmonic test samples"})


def test_point_cloud_module_pads_with_masks(tmp_path: Path) -> None:
    path = _point_cloud_file(tmp_path / "heat.h5")
    data = PointCloudDataModule(str(path), batch_size=3, packed=False)
    assert data.model_sizes() == {"coord_dim": 2, "function_channels": [3, 3], "params_dim": 1, "out_channels": 1}
    inputs, target = next(iter(data.train_dataloader()))
    lengths = (~inputs["query_padding"]).sum(1)
    assert inputs["coords"].shape[:2] == target["values"].shape[:2] and lengths.max() == inputs["coords"].shape[1]
    assert torch.equal(target["padding"], inputs["query_padding"])
    assert [f.shape[-1] for f in inputs["functions"]] == [3, 3]
    with pytest.raises(ValueError, match="different numbers of input functions"):
        sample = data.dataset("train")[0]
        collate_point_clouds([sample, {**sample, "functions": sample["functions"][:1]}])


# ---------------------------------------------------------------------------------------------- the CLI
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``formers-pde args`` run as its ``main`` in this process (:mod:`_cli`)."""
    return run_script("formers-pde", main, args, cwd=cwd)


def _console_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("formers-pde")
    return subprocess.run([str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": str(script.parent)})  # fmt: skip


@pytest.mark.slow
def test_fit_test_at_two_resolutions_and_predict(burgers_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--config", str(TINY), "--data.init_args.path", str(burgers_file), "--run_dir", str(run)]
    fit = _cli("fit", *common, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = run / "checkpoints" / "best.ckpt"
    test = _cli("test", *common, "--ckpt_path", str(ckpt), cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    metrics = (run / "metrics.json").read_text()
    assert '"rel_l2@64"' in metrics and '"rel_l2@128"' in metrics

    out = tmp_path / "pred.h5"
    pred = _cli("predict", "--ckpt", str(ckpt), str(burgers_file), "--out", str(out), "--subsample", "1", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    assert "relative L2 mean" in pred.stdout and out.with_suffix(".png").is_file()
    with h5py.File(out) as file:
        assert file["prediction"].shape == file["truth"].shape == (4, 512, 1)
        assert np.isfinite(file["prediction"][:]).all() and file["rel_l2"].shape == (4,)

    # any resolution from a .npy array; a bad array is reported with its file
    fields = tmp_path / "fields.npy"
    np.save(fields, np.sin(np.linspace(0, 2 * np.pi, 300))[None])
    npy = _cli("predict", "--ckpt", str(ckpt), str(fields), "--out", str(tmp_path / "npy.h5"), cwd=tmp_path)
    assert npy.returncode == 0, npy.stderr
    with h5py.File(tmp_path / "npy.h5") as file:
        assert file["prediction"].shape == (1, 300, 1)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 3, 4, 5)))
    failed = _cli("predict", "--ckpt", str(ckpt), str(bad), "--out", str(tmp_path / "bad.h5"), cwd=tmp_path)
    assert failed.returncode == 1 and "bad.npy" in failed.stderr
    no_out = _console_script("predict", "--ckpt", str(ckpt), str(burgers_file), cwd=tmp_path)  # the script itself
    assert no_out.returncode == 1 and "--out" in no_out.stderr


def test_point_cloud_module_packs_by_default_and_the_loss_matches_padded(tmp_path: Path) -> None:
    path = _point_cloud_file(tmp_path / "heat.h5")
    packed, padded = (
        PointCloudDataModule(str(path), batch_size=3),
        PointCloudDataModule(str(path), batch_size=3, packed=False),
    )
    (p_inputs, p_target), (d_inputs, d_target) = (
        next(iter(packed.test_dataloader())),
        next(iter(padded.test_dataloader())),
    )
    lengths = p_inputs["query_lengths"]
    assert p_inputs["coords"].shape[0] == int(lengths.sum()) == int((~d_inputs["query_padding"]).sum())
    task = OperatorTask("gnot_small", model_kwargs={"hidden_dim": 16, "num_layers": 1}, data_sizes=packed.model_sizes())
    task.eval()
    with torch.no_grad():
        loss_packed = task.loss(task(p_inputs), p_target)
        loss_padded = task.loss(task(d_inputs), d_target)
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-6)
    assert task.batch_size(None, p_inputs, p_target) == 2  # the 2 test samples

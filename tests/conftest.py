"""Suite-wide settings. Triton's CPU interpreter must be selected before anything imports triton."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# `make test` runs two pytest-xdist workers on the two cores: one torch/OpenMP thread each (and in the CLI runs they
# start), or two workers with two threads each fight over two cores
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

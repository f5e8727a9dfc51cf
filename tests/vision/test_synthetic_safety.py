"""``python -m formers.vision.synthetic --out DIR`` never deletes a folder it did not make."""

from __future__ import annotations

import pytest

from formers.core.runsafety import GENERATOR_MARKER, OutputOverwriteError
from formers.vision.synthetic import main, write_shapes_dataset

SMALL = {"train_per_class": 1, "test_per_class": 1, "size": 8, "classes": ("circle", "square")}


def test_a_folder_of_user_files_is_refused_and_kept(tmp_path, capsys):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(OutputOverwriteError, match="not empty and was not made by formers.vision.synthetic"):
        write_shapes_dataset(user, **SMALL)
    with pytest.raises(SystemExit):
        main(["--out", str(user), "--train-per-class", "1", "--test-per-class", "1", "--size", "8"])
    assert "refusing to replace its contents" in capsys.readouterr().err
    assert [p.name for p in user.iterdir()] == ["holiday.jpg"] and (user / "holiday.jpg").read_bytes() == b"precious"


def test_its_own_folder_is_regenerated(tmp_path):
    out = write_shapes_dataset(tmp_path / "shapes", **SMALL)
    assert (out / GENERATOR_MARKER).is_file() and (out / "train" / "circle" / "00000.png").is_file()
    (out / "train" / "circle" / "stale.png").write_bytes(b"old")
    write_shapes_dataset(out, **SMALL)
    assert not (out / "train" / "circle" / "stale.png").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_shapes_dataset(empty, **SMALL) / "test" / "square" / "00000.png").is_file()

"""Time-series input validation at the edge (read_series / validate_frame) and generators that never replace files
they did not write: every case here was accepted silently before (wrong target, backwards timestamps, inf)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from formers.core.runsafety import OutputOverwriteError
from formers.timeseries.data import read_series, validate_frame
from formers.timeseries.synthetic import main as synthetic_main
from formers.timeseries.synthetic import write_synthetic_csv


def _frame(n: int = 50) -> pd.DataFrame:
    return pd.DataFrame(
        {"date": pd.date_range("2020-01-01", periods=n, freq="h"), "a": np.arange(n) * 1.0, "OT": np.ones(n)}
    )


def _write(tmp_path, frame: pd.DataFrame, name: str = "data.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def test_valid_series_still_reads(tmp_path):
    frame = read_series(_write(tmp_path, _frame()))
    assert list(frame.columns) == ["date", "a", "OT"] and len(frame) == 50


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda f: f.iloc[::-1], r"row 1 \(2020-01-03 00:00:00\) is earlier than row 0"),  # reversed
        (lambda f: pd.concat([f.iloc[:10], f.iloc[9:]]), r"row 10 \(2020-01-01 09:00:00\) repeats row 9"),  # duplicated
        (lambda f: f.iloc[[0, 1, 2, 4, 3, 5]], r"row 4 .* is earlier than row 3"),  # shuffled
    ],
)
def test_time_index_must_strictly_increase(tmp_path, edit, match):
    path = _write(tmp_path, edit(_frame()))
    with pytest.raises(ValueError, match=match) as info:
        read_series(path)
    assert path in str(info.value) and "strictly increase" in str(info.value)


def test_a_duplicated_header_is_rejected_before_pandas_renames_it(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("date,OT,a,OT\n2020-01-01 00:00:00,1,2,3\n2020-01-01 01:00:00,1,2,3\n")
    with pytest.raises(ValueError, match=r"names column\(s\) \['OT'\] more than once") as info:
        read_series(path)
    assert str(path) in str(info.value)
    frame = pd.DataFrame([[pd.Timestamp("2020-01-01"), 1.0, 2.0]], columns=["date", "OT", "OT"])
    with pytest.raises(ValueError, match="more than once"):
        validate_frame(frame)


def test_values_beyond_float32_are_rejected_with_column_and_row(tmp_path):
    frame = _frame()
    frame.loc[7, "a"] = 1e39  # finite in float64, inf in float32
    with pytest.raises(ValueError, match=r"column 'a' has the value 1e\+39 at row 7, outside the float32 range"):
        read_series(_write(tmp_path, frame))
    frame.loc[7, "a"] = 3e38  # the largest float32 is 3.4e38: still fine
    assert read_series(_write(tmp_path, frame))["a"].iloc[7] == 3e38


def test_synthetic_csv_refuses_a_file_it_did_not_write(tmp_path, capsys):
    user = tmp_path / "mine.csv"
    user.write_text("date,sales\n2020-01-01,1\n")
    with pytest.raises(OutputOverwriteError, match="was not written by this generator"):
        write_synthetic_csv(user, rows=10)
    with pytest.raises(SystemExit):
        synthetic_main(["--out", str(user), "--rows", "10"])
    assert "refusing to replace it" in capsys.readouterr().err
    assert user.read_text() == "date,sales\n2020-01-01,1\n"
    with pytest.raises(OutputOverwriteError, match="is a folder"):
        write_synthetic_csv(tmp_path, rows=10)
    ours = write_synthetic_csv(tmp_path / "synthetic.csv", rows=10, channels=2)
    write_synthetic_csv(ours, rows=20, channels=3)  # its own output is replaced
    assert len(read_series(ours).columns) == 5 and not list(tmp_path.glob(".synthetic.csv.*"))


def test_fetch_refuses_to_overwrite_its_source_or_another_file(etth1, tmp_path):
    from formers.timeseries.fetch import fetch

    copy = fetch("ETTh1", tmp_path / "ETTh1.csv", source=str(etth1))
    with pytest.raises(OutputOverwriteError, match="is the input"):
        fetch("ETTh1", copy, source=str(copy))
    other = tmp_path / "notes.csv"
    other.write_text("date,OT\n")
    with pytest.raises(OutputOverwriteError, match="is not the official ETTh1 file"):
        fetch("ETTh1", other, source=str(etth1))
    assert other.read_text() == "date,OT\n"
    assert fetch("ETTh1", copy, source=str(etth1)).read_bytes() == etth1.read_bytes()  # the dataset itself: fine

"""formers.bytes.abc_midi: the Nottingham ABC/MIDI pairing and the note-level MIDI comparison.

Synthetic files are written with mido in the test; the real Nottingham folder comes from ../shared/data (tests skip
cleanly without it).
"""

from __future__ import annotations

import io
import random
import statistics
from pathlib import Path

import mido
import pytest

from formers.bytes.abc_midi import MidiError, Tune, compare_midi, midi_notes, read_tunes, split_tunes

NOTTINGHAM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bytes" / "abc" / "nottingham"
needs_nottingham = pytest.mark.skipif(
    not (NOTTINGHAM / "ABC_cleaned").is_dir(), reason=f"shared data not available at {NOTTINGHAM}"
)


def make_midi(tracks: list[list[tuple[str, int, int, int, int]]], ticks_per_beat: int = 480) -> bytes:
    """A type-1 MIDI file from ``(type, channel, note, velocity, delta)`` messages per track."""
    midi = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    for messages in tracks:
        track = mido.MidiTrack()
        for kind, channel, note, velocity, delta in messages:
            track.append(mido.Message(kind, channel=channel, note=note, velocity=velocity, time=delta))
        midi.tracks.append(track)
    out = io.BytesIO()
    midi.save(file=out)
    return out.getvalue()


MELODY = [
    ("note_on", 0, 60, 90, 0),
    ("note_off", 0, 60, 0, 480),
    ("note_on", 0, 62, 80, 0),
    ("note_on", 0, 62, 0, 240),  # velocity 0 = note off
    ("note_on", 1, 64, 70, 240),
    ("note_off", 1, 64, 0, 480),
]
CHORDS = [("note_on", 0, 48, 60, 0), ("note_on", 0, 52, 60, 0), ("note_off", 0, 48, 0, 960), ("note_off", 0, 52, 0, 0)]


# ------------------------------------------------------------------------------------------------ ABC collections
def test_split_tunes_cuts_on_x_lines_and_strips_the_gap():
    data = b"\nX: 1\nT:One\nK:G\nabc|\n\n\nX:2\nT:Two\nK:D\ndef|\n\n"
    tunes = split_tunes(data, "c.abc")
    assert tunes == [(1, b"X: 1\nT:One\nK:G\nabc|\n"), (2, b"X:2\nT:Two\nK:D\ndef|\n")]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"T:no tune\n", "no tune"),
        (b"X: 1\nabc\nX: one\ndef\n", r"c\.abc, line 3: .* has no tune number"),
        (b"X: 1\nabc\nX: 1\ndef\n", r"c\.abc, line 3: tune number X: 1 appears twice"),
    ],
)
def test_split_tunes_errors_name_the_file_and_line(data, message):
    with pytest.raises(ValueError, match=message):
        split_tunes(data, "c.abc")


def _nottingham_folder(root: Path, tunes: dict[str, dict[int, bytes]]) -> Path:
    (root / "ABC_cleaned").mkdir(parents=True)
    (root / "MIDI").mkdir()
    for name, numbered in tunes.items():
        text = b"".join(b"X: %d\nT:t\nK:C\nC|\n\n" % n for n in numbered)
        (root / "ABC_cleaned" / f"{name}.abc").write_bytes(text)
        for n, midi in numbered.items():
            if midi:
                (root / "MIDI" / f"{name}{n}.mid").write_bytes(midi)
    return root


def test_read_tunes_pairs_every_tune_with_its_midi(tmp_path):
    a, b = make_midi([MELODY]), make_midi([CHORDS])
    root = _nottingham_folder(tmp_path / "n", {"jigs": {1: a, 2: b}, "ashover": {7: b}})
    tunes = read_tunes(root)
    assert [t.name for t in tunes] == ["ashover7", "jigs1", "jigs2"]  # collections in sorted order, tunes in order
    assert tunes[1] == Tune("jigs1", b"X: 1\nT:t\nK:C\nC|\n", a) and tunes[2].midi == b


def test_read_tunes_errors_name_the_missing_path(tmp_path):
    with pytest.raises(ValueError, match=r"Nottingham folder .*nowhere/ABC_cleaned does not exist"):
        read_tunes(tmp_path / "nowhere")
    root = _nottingham_folder(tmp_path / "n", {"jigs": {1: make_midi([MELODY]), 2: b""}})
    with pytest.raises(ValueError, match=r"jigs\.abc: tune X: 2 has no MIDI file .*MIDI/jigs2\.mid"):
        read_tunes(root)


# ------------------------------------------------------------------------------------------------ MIDI notes
def test_midi_notes_reads_onsets_durations_and_velocities():
    notes = midi_notes(make_midi([MELODY, CHORDS]))
    assert notes == [
        (0, 0, 48, 960, 60),
        (0, 0, 52, 960, 60),
        (0, 0, 60, 480, 90),
        (480, 0, 62, 240, 80),
        (960, 1, 64, 480, 70),
    ]


def test_midi_notes_pairs_repeated_keys_first_in_first_out_and_closes_hanging_notes():
    messages = [
        ("note_on", 0, 60, 100, 0),
        ("note_on", 0, 60, 50, 100),  # struck again before the first ends
        ("note_off", 0, 60, 0, 100),  # ends the first (FIFO)
        ("note_off", 0, 60, 0, 100),  # ends the second
        ("note_on", 0, 67, 40, 0),  # never released: ends at the end of the track
        ("note_off", 0, 10, 0, 50),  # a stray note-off is ignored
    ]
    assert midi_notes(make_midi([messages])) == [(0, 0, 60, 200, 100), (100, 0, 60, 200, 50), (300, 0, 67, 50, 40)]


@pytest.mark.parametrize("data", [b"", b"MThd", b"not a midi file at all", bytes(range(256))])
def test_midi_notes_raises_midi_error_on_garbage(data):
    with pytest.raises(MidiError, match="not a readable MIDI file"):
        midi_notes(data)


# ------------------------------------------------------------------------------------------------ comparison
def test_compare_identical_files():
    truth = make_midi([MELODY, CHORDS])
    result = compare_midi(truth, truth)
    assert result["parses"] and result["exact"]
    assert result["note_precision"] == result["note_recall"] == result["note_f1"] == 1.0
    assert result["duration_accuracy"] == result["note_f1_with_duration"] == 1.0
    assert result["num_predicted_notes"] == result["num_true_notes"] == 5


def test_compare_one_changed_pitch():
    truth = make_midi([MELODY, CHORDS])
    changed = [list(m) for m in MELODY]
    changed[0][2] = changed[1][2] = 61  # the first note: 60 -> 61 (on and off)
    result = compare_midi(make_midi([[tuple(m) for m in changed], CHORDS]), truth)
    assert result["parses"] and not result["exact"]
    assert result["note_precision"] == result["note_recall"] == 4 / 5
    assert result["note_f1"] == pytest.approx(4 / 5)


def test_compare_reports_durations_separately():
    def tracks(durations):  # three notes on their own tracks, onsets 0, 480, 960; the durations vary
        onsets, keys = (0, 480, 960), ((0, 60), (0, 62), (1, 64))
        return make_midi(
            [
                [("note_on", ch, pitch, 90, onset), ("note_off", ch, pitch, 0, duration)]
                for onset, (ch, pitch), duration in zip(onsets, keys, durations, strict=True)
            ]
        )

    result = compare_midi(tracks((960, 240, 100)), tracks((480, 240, 480)))
    assert result["note_f1"] == 1.0  # same onsets, channels and pitches
    assert result["duration_accuracy"] == pytest.approx(1 / 3)  # only the middle note lasts as long
    assert result["note_f1_with_duration"] == pytest.approx(1 / 3)


def test_compare_never_crashes_on_garbage():
    truth = make_midi([MELODY, CHORDS])
    rng = random.Random(0)
    samples = [b"", bytes(rng.getrandbits(8) for _ in range(300)), truth[: len(truth) // 2], b"MThd\x00\x00"]
    for data in samples:
        result = compare_midi(data, truth)
        assert result["parses"] is False and result["exact"] is False
        assert result["note_f1"] == result["note_precision"] == result["note_recall"] == 0.0
        assert result["num_true_notes"] == 5
    for _ in range(50):  # bit flips in a real file: parse or not, never an exception
        corrupt = bytearray(truth)
        corrupt[rng.randrange(len(corrupt))] = rng.getrandbits(8)
        assert 0.0 <= compare_midi(bytes(corrupt), truth)["note_f1"] <= 1.0


def test_compare_refuses_an_unreadable_truth():
    with pytest.raises(MidiError):
        compare_midi(make_midi([MELODY]), b"garbage")


def test_compare_empty_files_score_one_when_both_have_no_notes():
    empty = make_midi([[]])
    assert compare_midi(empty, empty)["note_f1"] == 1.0
    assert compare_midi(empty, make_midi([MELODY]))["note_recall"] == 0.0


# ------------------------------------------------------------------------------------------------ real data
@needs_nottingham
def test_real_nottingham_pairs():
    tunes = read_tunes(NOTTINGHAM)
    assert len(tunes) == 1034 == len({t.name for t in tunes})
    sizes = [len(t.abc) for t in tunes]
    assert (min(sizes), max(sizes), statistics.median(sizes)) == (128, 1352, 402)  # SOURCES.md's numbers
    assert all(t.abc.startswith(b"X:") and t.abc.endswith(b"\n") for t in tunes)
    assert tunes[0].name == "ashover1" and tunes[0].midi == (NOTTINGHAM / "MIDI" / "ashover1.mid").read_bytes()
    assert all(t.midi.startswith(b"MThd") for t in tunes)


@needs_nottingham
def test_real_midi_comparison():
    truth = (NOTTINGHAM / "MIDI" / "ashover1.mid").read_bytes()
    result = compare_midi(truth, truth)
    assert result["exact"] and result["note_f1"] == 1.0 and result["num_true_notes"] > 100
    midi = mido.MidiFile(file=io.BytesIO(truth))
    first = next(m for m in midi.tracks[0] if m.type == "note_on" and m.velocity > 0)
    old = first.note
    for message in midi.tracks[0]:  # move the first melody note (its on and its off) up a semitone
        if message.type in ("note_on", "note_off") and message.note == old:
            message.note = old + 1
            if message.type == "note_off" or message.velocity == 0:
                break
    out = io.BytesIO()
    midi.save(file=out)
    changed = compare_midi(out.getvalue(), truth)
    n = result["num_true_notes"]
    assert changed["parses"] and not changed["exact"]
    assert changed["note_precision"] == changed["note_recall"] == (n - 1) / n
    assert changed["note_f1"] == pytest.approx((n - 1) / n)

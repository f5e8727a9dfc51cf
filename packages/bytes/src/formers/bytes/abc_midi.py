"""The Nottingham ABC -> MIDI pairs, and a note-level comparison of a generated MIDI file with the truth.

Data layout (``../shared/data/bytes/abc/nottingham``, see that folder's SOURCES.md)::

    ABC_cleaned/<name>.abc     14 collections; a tune starts at a line beginning with ``X:`` (``X: 12``)
    MIDI/<name><n>.mid         the rendering of tune ``X: n`` of ``<name>.abc`` (1034 of 1034 pairs)

A tune's ABC text is its collection's bytes from its ``X:`` line up to the next ``X:`` line, trailing whitespace
(the blank lines between tunes) replaced by one ``\\n`` (per-tune sizes 128 .. 1,352 bytes, median 402, as SOURCES.md
states).

:func:`compare_midi` scores a predicted MIDI file note by note: a note is ``(onset_tick, channel, pitch, duration,
velocity)`` (:func:`midi_notes`), and a predicted note matches a true one with the same onset, channel and pitch
(each true note matched at most once); duration equality is reported separately. Any bytes can be scored: a file
that does not parse gets ``parses=False`` and zero scores, never an exception.
"""

from __future__ import annotations

import io
import re
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Tune", "MidiError", "split_tunes", "read_tunes", "midi_notes", "compare_midi"]

_X_LINE = re.compile(rb"^X:", re.MULTILINE)


@dataclass(frozen=True)
class Tune:
    """One Nottingham tune: ``name`` = ``<collection><X number>`` (the MIDI file's stem), its ABC text and MIDI file."""

    name: str
    abc: bytes
    midi: bytes


class MidiError(ValueError):
    """Bytes that are not a readable Standard MIDI File (the parser's own error is chained)."""


def split_tunes(data: bytes, source: str | Path = "<bytes>") -> list[tuple[int, bytes]]:
    """``(X number, tune text)`` of every tune of an ABC collection, in file order.

    Raises:
        ValueError: an ``X:`` line without an integer, a repeated number, or no tune at all (naming ``source`` and
            the line).
    """
    starts = [m.start() for m in _X_LINE.finditer(data)]
    if not starts:
        raise ValueError(f"{source}: no tune (no line starting with 'X:')")
    tunes: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    for start, end in zip(starts, [*starts[1:], len(data)], strict=True):
        text = data[start:end]
        first = text.split(b"\n", 1)[0]
        line = data.count(b"\n", 0, start) + 1
        try:
            number = int(first[2:].strip())
        except ValueError:
            raise ValueError(f"{source}, line {line}: {first!r} has no tune number") from None
        if number in seen:
            raise ValueError(f"{source}, line {line}: tune number X: {number} appears twice")
        seen.add(number)
        tunes.append((number, text.rstrip() + b"\n"))
    return tunes


def read_tunes(root: str | Path) -> list[Tune]:
    """Every tune of ``<root>/ABC_cleaned/*.abc`` (collections in sorted order) with its ``<root>/MIDI/`` file.

    Raises:
        ValueError: a missing folder, a collection without tunes, or a tune without its MIDI file (naming the path).
    """
    root = Path(root)
    abc_dir, midi_dir = root / "ABC_cleaned", root / "MIDI"
    for folder in (abc_dir, midi_dir):
        if not folder.is_dir():
            raise ValueError(
                f"Nottingham folder {folder} does not exist; expected {root} to hold ABC_cleaned/ and MIDI/ "
                "(../shared/data/bytes/abc/nottingham, see its SOURCES.md)"
            )
    collections = sorted(abc_dir.glob("*.abc"))
    if not collections:
        raise ValueError(f"{abc_dir} holds no .abc file")
    tunes: list[Tune] = []
    for path in collections:
        for number, text in split_tunes(path.read_bytes(), path):
            midi = midi_dir / f"{path.stem}{number}.mid"
            if not midi.is_file():
                raise ValueError(f"{path}: tune X: {number} has no MIDI file {midi}")
            tunes.append(Tune(f"{path.stem}{number}", text, midi.read_bytes()))
    return tunes


def midi_notes(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """The notes of a MIDI file, sorted: ``(onset_tick, channel, pitch, duration_ticks, velocity)``.

    Onsets are absolute ticks from the start of each track (the tracks of a type-1 file play together). A note ends at
    the first ``note_off`` (or ``note_on`` with velocity 0) of the same channel and pitch after it starts (first in,
    first out when the same key is struck again before it ends); a note still sounding at the end of its track ends
    there.

    Raises:
        MidiError: the bytes do not parse as a Standard MIDI File.
    """
    import mido  # a dependency of formers-bytes; imported here so the data modules load without it

    try:
        midi = mido.MidiFile(file=io.BytesIO(bytes(data)))
    except Exception as err:  # mido raises OSError, EOFError, ValueError, KeyError, ... on malformed files
        raise MidiError(f"not a readable MIDI file ({type(err).__name__}: {err})") from err
    notes: list[tuple[int, int, int, int, int]] = []
    for track in midi.tracks:
        tick = 0
        sounding: dict[tuple[int, int], deque[tuple[int, int]]] = defaultdict(deque)
        for message in track:
            tick += message.time
            if message.type == "note_on" and message.velocity > 0:
                sounding[(message.channel, message.note)].append((tick, message.velocity))
            elif message.type in ("note_off", "note_on"):
                started = sounding.get((message.channel, message.note))
                if started:
                    onset, velocity = started.popleft()
                    notes.append((onset, message.channel, message.note, tick - onset, velocity))
        for (channel, pitch), started in sounding.items():
            notes.extend((onset, channel, pitch, tick - onset, velocity) for onset, velocity in started)
    return sorted(notes)


def _scores(matched: int, predicted: int, true: int) -> tuple[float, float, float]:
    """Precision, recall and F1 of ``matched`` of ``predicted`` against ``true`` (empty vs empty scores 1)."""
    precision = matched / predicted if predicted else float(true == 0)
    recall = matched / true if true else float(predicted == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def compare_midi(predicted: bytes, truth: bytes) -> dict[str, Any]:
    """Note-level comparison of a predicted MIDI file with the true one (module docstring).

    Returns:
        ``parses`` (the prediction is a readable MIDI file), ``exact`` (byte-identical), ``note_precision``,
        ``note_recall``, ``note_f1`` (notes matched on onset, channel and pitch), ``duration_accuracy`` (of the
        matched notes, the fraction whose duration is also equal; 0 without matches), ``note_f1_with_duration``
        (matching on duration too), ``num_predicted_notes`` and ``num_true_notes``. A prediction that does not parse
        scores 0 everywhere (``num_predicted_notes`` 0).

    Raises:
        MidiError: the *true* file does not parse (a data error, not a model error).
    """
    true_notes = midi_notes(truth)
    result: dict[str, Any] = {"parses": True, "exact": bytes(predicted) == bytes(truth)}
    try:
        pred_notes = midi_notes(predicted)
    except MidiError:
        result.update(
            parses=False,
            note_precision=0.0,
            note_recall=0.0,
            note_f1=0.0,
            duration_accuracy=0.0,
            note_f1_with_duration=0.0,
            num_predicted_notes=0,
            num_true_notes=len(true_notes),
        )
        return result
    key = lambda note: note[:3]  # noqa: E731  (onset, channel, pitch)
    key_dur = lambda note: note[:4]  # noqa: E731  (onset, channel, pitch, duration)
    matched = sum((Counter(map(key, pred_notes)) & Counter(map(key, true_notes))).values())
    matched_dur = sum((Counter(map(key_dur, pred_notes)) & Counter(map(key_dur, true_notes))).values())
    precision, recall, f1 = _scores(matched, len(pred_notes), len(true_notes))
    result.update(
        note_precision=precision,
        note_recall=recall,
        note_f1=f1,
        duration_accuracy=matched_dur / matched if matched else 0.0,
        note_f1_with_duration=_scores(matched_dur, len(pred_notes), len(true_notes))[2],
        num_predicted_notes=len(pred_notes),
        num_true_notes=len(true_notes),
    )
    return result

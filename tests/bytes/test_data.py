"""formers.bytes.data: ByteFormer classification batches and bGPT sequences (windows, masks, splits).

Synthetic files (WAVs, a JPEG tar, text, a Nottingham-like folder, a CPU-simulation file) are written in the test;
the real datasets come from ../shared/data (tests skip cleanly without it).
"""

from __future__ import annotations

import io
import random
import tarfile
import wave
from pathlib import Path

import pytest
import torch

from formers.bytes.data import (
    ByteLMDataModule,
    ConversionDataModule,
    CPUSimDataModule,
    FSDDDataModule,
    ImageBytesDataModule,
    LMEvalDataset,
    LMTrainDataset,
    WavAugment,
    body_patches,
    collate_bytes,
    collate_sequences,
    crop_sequence,
    file_window,
    sliding_windows,
    states_sequence,
)
from formers.bytes.patches import PAD, conversion_sequence, file_sequence, header_patch
from formers.core.tasks import merge_data_sizes

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FSDD = SHARED / "bytes" / "fsdd" / "recordings"
CIFAR = SHARED / "vision" / "cifar10" / "cifar10-jpg.tar"
SHAKESPEARE = SHARED / "bytes" / "text" / "tinyshakespeare" / "input.txt"
CPYTHON = SHARED / "bytes" / "code" / "cpython-3.11.7-Lib"
NOTTINGHAM = SHARED / "bytes" / "abc" / "nottingham"


def needs(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"shared data not available at {path}")


def wav_bytes(samples: list[int], rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(torch.tensor(samples, dtype=torch.int16).numpy().tobytes())
    return out.getvalue()


def wav_samples(data: bytes) -> torch.Tensor:
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
        return torch.frombuffer(bytearray(reader.readframes(reader.getnframes())), dtype=torch.int16)


# ================================================================================================ classification
def test_collate_bytes_pads_with_256_and_gives_lengths():
    items = [(torch.tensor([1, 2, 3], dtype=torch.uint8), 4), (b"\x00\xff", 7), (torch.tensor([9]), 0)]
    inputs, target = collate_bytes(items)
    assert inputs["tokens"].dtype == inputs["lengths"].dtype == target.dtype == torch.long
    assert inputs["tokens"].tolist() == [[1, 2, 3], [0, 255, PAD], [9, PAD, PAD]]
    assert inputs["lengths"].tolist() == [3, 2, 1] and target.tolist() == [4, 7, 0]
    with pytest.raises(ValueError, match="empty batch"):
        collate_bytes([])


def _fsdd_folder(root: Path, takes=range(12)) -> Path:
    root.mkdir(parents=True)
    rng = random.Random(0)
    for digit in range(10):
        for speaker in ("ann", "bob"):
            for take in takes:
                samples = [rng.randint(-3000, 3000) for _ in range(rng.randint(20, 200))]
                (root / f"{digit}_{speaker}_{take}.wav").write_bytes(wav_bytes(samples))
    return root


def test_fsdd_splits_by_take_and_labels_by_digit(tmp_path):
    root = _fsdd_folder(tmp_path / "recordings")
    dm = FSDDDataModule(root=str(root), batch_size=4)
    splits = dm.datasets
    assert {s: len(d) for s, d in splits.items()} == {"train": 40, "val": 100, "test": 100}
    takes = {s: {int(p.stem.split("_")[2]) for p in d.paths} for s, d in splits.items()}
    assert takes == {"test": {0, 1, 2, 3, 4}, "val": {5, 6, 7, 8, 9}, "train": {10, 11}}
    for dataset in splits.values():
        assert all(label == int(p.name[0]) for p, label in zip(dataset.paths, dataset.labels, strict=True))
    data, label = splits["train"][0]
    assert data.dtype == torch.uint8 and bytes(data.tolist()) == dataset_file(splits["train"], 0)
    inputs, target = next(iter(dm.train_dataloader()))
    assert inputs["tokens"].shape[0] == 4 and int(inputs["lengths"].max()) == inputs["tokens"].shape[1]
    assert dm.model_sizes() == {"num_classes": 10}
    state = dm.state_dict()
    assert state["classes"] == [str(d) for d in range(10)] and state["max_bytes"] == 36_568


def dataset_file(dataset, i: int) -> bytes:
    return dataset.paths[i].read_bytes()


def test_fsdd_cuts_long_files_to_their_first_bytes(tmp_path):
    root = _fsdd_folder(tmp_path / "recordings")
    dm = FSDDDataModule(root=str(root), max_bytes=100, val_takes=[10])
    test = dm.dataset("test")
    data, _ = test[0]
    assert bytes(data.tolist()) == dataset_file(test, 0)[:100]
    assert dm.cut_files["test"] == sum(p.stat().st_size > 100 for p in test.paths) > 0
    assert len(dm.dataset("val")) == 20 and len(dm.dataset("train")) == 120  # takes 5-9 and 11


def test_fsdd_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"FSDD folder .*missing does not exist"):
        FSDDDataModule(root=str(tmp_path / "missing")).setup()
    root = _fsdd_folder(tmp_path / "recordings", takes=[0])
    (root / "bad-name.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"bad-name\.wav: the name is not"):
        FSDDDataModule(root=str(root)).setup()
    with pytest.raises(ValueError, match=r"val_takes \[3\] are test takes"):
        FSDDDataModule(root=str(root), val_takes=[3, 9])


def test_wav_augment_keeps_a_valid_wav_of_the_same_length():
    samples = list(range(-500, 500, 3))
    data = wav_bytes(samples)
    assert WavAugment(roll_fraction=0.0, gain_db=0.0, noise_db=None)(data) == data  # nothing drawn: same bytes
    torch.manual_seed(1)
    rolled = WavAugment(roll_fraction=0.1, gain_db=0.0, noise_db=None)(data)
    assert len(rolled) == len(data) and rolled[:44] == data[:44]  # FSDD's canonical header, rewritten by wave
    shift = int(torch.nonzero(wav_samples(rolled) == samples[0])[0])
    n = len(samples)
    assert torch.equal(wav_samples(rolled), torch.roll(torch.tensor(samples, dtype=torch.int16), shift))
    assert min(shift, n - shift) <= int(n * 0.1)
    augment = WavAugment(roll_fraction=0.1, gain_db=3.0, noise_db=-50.0)
    torch.manual_seed(2)
    first = augment(data)
    torch.manual_seed(2)
    assert augment(data) == first and first != data  # torch's RNG makes it reproducible
    loud = wav_bytes([32000, -32000] * 50)
    torch.manual_seed(0)
    clipped = wav_samples(WavAugment(roll_fraction=0.0, gain_db=6.0, noise_db=None)(loud))
    assert int(clipped.abs().max()) <= 32768 and len(clipped) == 100
    with pytest.raises(ValueError, match="not a PCM WAV file"):
        augment(b"RIFF....")


def test_fsdd_augmentation_only_changes_training_files(tmp_path):
    root = _fsdd_folder(tmp_path / "recordings")
    dm = FSDDDataModule(root=str(root), augment=True, gain_db=2.0)
    torch.manual_seed(0)
    train, test = dm.dataset("train"), dm.dataset("test")
    assert bytes(train[0][0].tolist()) != dataset_file(train, 0)
    assert len(train[0][0]) == len(dataset_file(train, 0))
    assert bytes(test[0][0].tolist()) == dataset_file(test, 0)


def _image_tar(path: Path, counts: dict[str, int], extra: str | None = None, mode: str = "w") -> Path:
    from PIL import Image

    rng = random.Random(0)
    with tarfile.open(path, mode) as tar:
        for split, per_class in counts.items():
            for cls in ("cat", "ant", "dog"):
                for i in range(per_class):
                    image = Image.new("RGB", (8, 8), tuple(rng.randrange(256) for _ in range(3)))
                    out = io.BytesIO()
                    image.save(out, format="JPEG")
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = len(out.getvalue())
                    tar.addfile(info, io.BytesIO(out.getvalue()))
        if extra:
            info = tarfile.TarInfo(extra)
            tar.addfile(info, io.BytesIO(b""))
    return path


@pytest.mark.parametrize(
    "encoding, magic", [("tiff", (b"II*\x00", b"MM\x00*")), ("png", (b"\x89PNG",)), ("jpeg", (b"\xff\xd8",))]
)
def test_image_bytes_encodings_and_splits(tmp_path, encoding, magic):
    tar = _image_tar(tmp_path / "images.tar", {"train": 5, "test": 2})
    dm = ImageBytesDataModule(archive=str(tar), encoding=encoding, val_per_class=2)
    assert dm.model_sizes() == {"num_classes": 3} and dm.classes == ["ant", "cat", "dog"]
    members = dm.split_members()
    assert {s: len(m) for s, m in members.items()} == {"train": 9, "val": 6, "test": 6}
    val_names = {name for name, *_ in members["val"]}
    assert val_names == {f"train/{c}/{i:04d}.jpg" for c in ("ant", "cat", "dog") for i in (3, 4)}
    dataset = dm.dataset("train")
    lengths = set()
    for i in range(len(dataset)):
        data, label = dataset[i]
        assert bytes(data[:4].tolist()).startswith(magic) and label == members["train"][i][1]
        lengths.add(len(data))
    if encoding != "jpeg":
        assert len(lengths) == 1  # TIFF / PNG (compress_level=0) of a fixed image size have a fixed length
        from PIL import Image

        assert Image.open(io.BytesIO(bytes(data.tolist()))).size == (8, 8)
    assert dm.state_dict() == {"kind": "image_bytes", "classes": ["ant", "cat", "dog"], "encoding": encoding}
    limited = ImageBytesDataModule(archive=str(tar), encoding=encoding, val_per_class=2, limit_per_class=1)
    assert {s: len(d) for s, d in limited.datasets.items()} == {"train": 3, "val": 3, "test": 3}


def test_image_bytes_errors_name_the_archive(tmp_path):
    with pytest.raises(ValueError, match=r"image archive .*none\.tar does not exist"):
        ImageBytesDataModule(archive=str(tmp_path / "none.tar")).model_sizes()
    bad = _image_tar(tmp_path / "bad.tar", {"train": 3, "test": 1}, extra="train/readme.txt")
    with pytest.raises(ValueError, match=r"bad\.tar: member 'train/readme\.txt' is not train/<class>/<file>"):
        ImageBytesDataModule(archive=str(bad)).model_sizes()
    gz = _image_tar(tmp_path / "images.tar.gz", {"train": 3, "test": 1}, mode="w:gz")
    with pytest.raises(ValueError, match=r"images\.tar\.gz is not an uncompressed tar"):
        ImageBytesDataModule(archive=str(gz)).model_sizes()
    with pytest.raises(ValueError, match="encoding must be one of"):
        ImageBytesDataModule(archive=str(gz), encoding="bmp")  # type: ignore[arg-type]


# ================================================================================================ bGPT sequences
def test_collate_sequences_pads_with_256_patches_and_false_masks():
    a, b = file_sequence(b"x" * 40, "txt"), file_sequence(b"yz", "py")
    inputs, target = collate_sequences([a, b])
    assert inputs["patches"].shape == (2, 5, 16) and inputs["num_patches"].tolist() == [5, 3]
    assert torch.equal(inputs["patches"][1, :3], b.patches) and (inputs["patches"][1, 3:] == PAD).all()
    assert target["target_mask"].dtype == target["real_mask"].dtype == torch.bool
    assert not target["real_mask"][1, 3:].any() and not target["target_mask"][1, 3:].any()
    assert int(target["real_mask"].sum()) == 42 and int(target["target_mask"].sum()) == 44


def test_file_window_equals_the_crop_of_the_whole_sequence():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(0, 150)
        data = bytes(rng.getrandbits(8) for _ in range(n))
        body = body_patches(n)
        start = rng.randint(0, body - 1)
        length = rng.randint(1, body - start)
        count_from = rng.randint(0, body + 1)
        made = file_window(data, "py", start, length, count_from)
        expected = crop_sequence(file_sequence(data, "py"), start, length, count_from)
        for field in ("patches", "target_mask", "real_mask"):
            assert torch.equal(getattr(made, field), getattr(expected, field)), (n, start, length, count_from)
    whole = file_window(b"abc" * 11, "txt", 0, body_patches(33))
    reference = file_sequence(b"abc" * 11, "txt")
    assert all(torch.equal(getattr(whole, f), getattr(reference, f)) for f in ("patches", "target_mask", "real_mask"))


@pytest.mark.parametrize("window", [3, 4, 8, 17])
def test_sliding_windows_count_every_byte_exactly_once(window):
    rng = random.Random(window)
    for n in [0, 1, 15, 16, 17, 100, 333, 1000, *(rng.randint(1, 3000) for _ in range(10))]:
        data = bytes(rng.getrandbits(8) for _ in range(n))
        windows = sliding_windows(body_patches(n), window)
        counted = torch.zeros(n + 1, dtype=torch.long)  # the n bytes, then the terminator
        for start, length, count_from in windows:
            item = file_window(data, "txt", start, length, count_from)
            assert len(item) <= window and torch.equal(item.patches[0], header_patch("txt"))
            position = torch.arange(start * 16, (start + length) * 16).view(length, 16)
            counted.index_add_(
                0, position[item.target_mask[1:]], torch.ones(int(item.target_mask.sum()), dtype=torch.long)
            )
            assert torch.equal(
                item.patches[1:].flatten()[: max(0, min(n - start * 16, length * 16))],
                torch.tensor(list(data[start * 16 : (start + length) * 16]), dtype=torch.long),
            )
        assert (counted == 1).all(), (n, window)
        if len(windows) > 1:  # every counted byte has at least half a window of context before it
            for (s0, l0, _), (s1, l1, c1) in zip(windows, windows[1:], strict=False):
                assert c1 == s0 + l0 and c1 - s1 >= (window - 1) // 2 and s1 + l1 <= body_patches(n)
    with pytest.raises(ValueError, match="window_patches must be >= 3"):
        sliding_windows(10, 2)


def test_lm_eval_dataset_counts_each_held_out_byte_once():
    rng = random.Random(0)
    docs = [bytes(rng.getrandbits(8) for _ in range(n)) for n in (5, 700, 2000)]
    dataset = LMEvalDataset(docs, ["py"] * 3, window_patches=16)
    items = [dataset[i] for i in range(len(dataset))]
    assert len(items) > 3 and all(len(item) <= 16 for item in items)
    assert sum(int(item.real_mask.sum()) for item in items) == sum(map(len, docs))
    assert sum(int(item.target_mask.sum()) for item in items) == sum(map(len, docs)) + len(docs)
    again = [dataset[i] for i in range(len(dataset))]
    assert all(torch.equal(a.patches, b.patches) for a, b in zip(items, again, strict=True))  # deterministic


def test_lm_training_crop_keeps_the_header_and_counts_only_the_window():
    rng = random.Random(1)
    data = bytes(rng.getrandbits(8) for _ in range(1000))  # 63 data patches + end patch = 64 body patches
    short = b"fits in one window"
    dataset = LMTrainDataset([data, short], ["py", "txt"], window_patches=10)
    starts = set()
    torch.manual_seed(0)
    for _ in range(300):
        item = dataset[0]
        assert len(item) == 10 and torch.equal(item.patches[0], header_patch("py"))
        assert not item.real_mask[0].any() and not item.target_mask[0].any()
        flat = item.patches[1:].flatten()
        start = data.find(bytes(flat[:16].tolist())) // 16 if flat[0] != PAD else 63
        starts.add(start)
        window_bytes = data[start * 16 : (start + 9) * 16]
        assert int(item.real_mask.sum()) == len(window_bytes)
        assert torch.equal(flat[: len(window_bytes)], torch.tensor(list(window_bytes)))
        has_end = start * 16 <= len(data) < (start + 9) * 16  # the terminator (first 256 after the file) is inside
        assert int(item.target_mask.sum()) == len(window_bytes) + has_end
    assert starts == set(range(0, 64 - 9 + 1))  # every patch-aligned window, the head and the tail included
    whole = dataset[1]
    assert torch.equal(whole.patches, file_sequence(short, "txt").patches)
    torch.manual_seed(5)
    first = [dataset[0].patches for _ in range(5)]
    torch.manual_seed(5)
    assert all(torch.equal(a, dataset[0].patches) for a in first)  # torch's RNG: reproducible


def test_lm_text_module_splits_by_position(tmp_path):
    text = bytes(rng_bytes(10_000))
    path = tmp_path / "input.txt"
    path.write_bytes(text)
    dm = ByteLMDataModule(str(path), kind="text", window_patches=8, chunk_bytes=300, batch_size=3)
    splits = dm.datasets
    assert dm.summary["bytes"] == {"train": 8500, "val": 500, "test": 1000}
    assert dm.summary["documents"] == {"train": 29, "val": 2, "test": 4}
    train = splits["train"]
    assert b"".join(train.documents) == text[:8500] and all(len(d) <= 300 for d in train.documents)
    assert b"".join(splits["test"].documents) == text[9000:] and train.extensions[0] == "txt"
    test_items = [splits["test"][i] for i in range(len(splits["test"]))]
    assert sum(int(item.real_mask.sum()) for item in test_items) == 1000
    inputs, target = next(iter(dm.train_dataloader()))
    assert inputs["patches"].shape == (3, 8, 16) and inputs["num_patches"].tolist() == [8, 8, 8]
    assert dm.model_sizes() == {"patch_length": 8}
    state = dm.state_dict()
    assert state["window_patches"] == 8 and state["extension"] == "txt" and state["kind"] == "lm"


def rng_bytes(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(n))


def test_lm_files_module_sorts_in_c_locale_and_skips_empty_files(tmp_path):
    root = tmp_path / "lib"
    names = [f"pkg/m{i:02d}.py" for i in range(15)] + ["B.py", "a.py", "_x.py", "pkg/__init__.py", "notes.txt"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"" if name.endswith("__init__.py") else rng_bytes(50 + 37 * i, i))
    with pytest.warns(UserWarning, match="skipped empty files"):
        dm = ByteLMDataModule(str(root), kind="files", window_patches=6)
        dm.setup()
    # 19 .py files in byte order: "B.py" < "_x.py" < "a.py" < "pkg/__init__.py" < "pkg/m00.py" ...; test = the last 2
    assert dm.split_names["test"] == ["pkg/m13.py", "pkg/m14.py"] and dm.split_names["val"] == ["pkg/m12.py"]
    assert dm.split_names["train"][:4] == ["B.py", "_x.py", "a.py", "pkg/m00.py"]
    assert dm.summary["skipped empty files"] == {"train": 1, "val": 0, "test": 0}
    assert dm.summary["documents"] == {"train": 15, "val": 1, "test": 2}
    test = dm.dataset("test")
    assert sum(int(test[i].real_mask.sum()) for i in range(len(test))) == dm.summary["bytes"]["test"]
    assert torch.equal(test[0].patches[0], header_patch("py")) and dm.state_dict()["extension"] is None
    with pytest.raises(ValueError, match=r"source folder .*nope does not exist"):
        ByteLMDataModule(str(tmp_path / "nope"), kind="files").setup()
    with pytest.raises(ValueError, match=r"no file in .* matches '\*\*/\*\.rs'"):
        ByteLMDataModule(str(root), kind="files", glob="**/*.rs").setup()
    with pytest.raises(ValueError, match=r"text file .*lib does not exist"):
        ByteLMDataModule(str(root), kind="text").setup()


def test_window_is_a_model_size_that_must_agree():
    dm = ByteLMDataModule("unused.txt", window_patches=256)
    assert merge_data_sizes("bgpt", {}, dm.model_sizes()) == {"patch_length": 256}
    with pytest.raises(ValueError, match=r"model_kwargs\.patch_length=512 but the data has patch_length=256"):
        merge_data_sizes("bgpt", {"patch_length": 512}, dm.model_sizes())
    with pytest.raises(ValueError, match="window_patches must be an integer >= 3"):
        ByteLMDataModule("unused.txt", window_patches=2)
    with pytest.raises(ValueError, match="trained with window_patches=512, this data has 256"):
        dm.load_state_dict({"kind": "lm", "window_patches": 512})


def _midi(notes: int) -> bytes:
    import mido

    midi = mido.MidiFile(type=1)
    track = mido.MidiTrack()
    for i in range(notes):
        track += [
            mido.Message("note_on", note=60 + i % 12, velocity=80, time=0),
            mido.Message("note_off", note=60 + i % 12, time=120),
        ]
    midi.tracks.append(track)
    out = io.BytesIO()
    midi.save(file=out)
    return out.getvalue()


def test_conversion_masks_cover_the_midi_and_long_pairs_are_excluded(tmp_path):
    root = tmp_path / "nottingham"
    (root / "ABC_cleaned").mkdir(parents=True)
    (root / "MIDI").mkdir()
    sizes = {1: 2, 2: 5, 3: 40, 4: 3}
    (root / "ABC_cleaned" / "jigs.abc").write_bytes(b"".join(b"X: %d\nK:G\nabc|\n\n" % n for n in sizes))
    for n, notes in sizes.items():
        (root / "MIDI" / f"jigs{n}.mid").write_bytes(_midi(notes))
    window = 12
    with pytest.warns(UserWarning, match="excluded pairs longer than the window"):
        dm = ConversionDataModule(root=str(root), window_patches=window, val_fraction=0.0, test_fraction=0.0)
        dm.setup()
    assert dm.summary["excluded pairs longer than the window"] == {"train": 1, "val": 0, "test": 0}  # 40 notes
    assert dm.split_names["train"] == ["jigs1", "jigs2", "jigs4"]
    dataset = dm.dataset("train")
    for i, tune in enumerate(dataset.tunes):
        item = dataset[i]
        reference = conversion_sequence(tune.abc, "abc", tune.midi, "mid")
        assert torch.equal(item.patches, reference.patches) and len(item) <= window
        flat, real, target = item.patches.flatten(), item.real_mask.flatten(), item.target_mask.flatten()
        assert bytes(flat[real].tolist()) == tune.midi  # exactly the MIDI bytes
        extra = (target & ~real).nonzero().flatten()
        assert extra.tolist() == [int(real.nonzero().max()) + 1] and flat[extra].tolist() == [PAD]  # the terminator
    assert dm.state_dict()["target_extension"] == "mid" and dm.model_sizes() == {"patch_length": window}
    with pytest.raises(ValueError, match=r"jigs\.abc: tune X: 4 has no MIDI file"):
        (root / "MIDI" / "jigs4.mid").unlink()
        ConversionDataModule(root=str(root)).setup()


def test_conversion_split_is_a_stable_hash_of_the_name():
    dm = ConversionDataModule(root="unused")
    names = [f"reels{i}" for i in range(2000)]
    splits = [dm.split_of(name) for name in names]
    assert splits == [ConversionDataModule(root="x").split_of(name) for name in names]
    assert 0.07 < splits.count("test") / 2000 < 0.13 and 0.03 < splits.count("val") / 2000 < 0.07


def test_states_sequence_counts_only_the_predicted_states():
    data = bytes(range(256)) * 4 + bytes(16 * 5)  # memory image + 5 states
    item = states_sequence(data, "bin", counted_from=1040)
    flat = item.patches.flatten()
    assert int(item.real_mask.sum()) == len(data) - 1040
    assert bool(item.real_mask.flatten()[16 + 1040]) and not item.real_mask.flatten()[: 16 + 1040].any()
    assert int(item.target_mask.sum()) == len(data) - 1040 + 1 and int(flat[item.target_mask.flatten()][-1]) == PAD


def test_cpu_sim_module(tmp_path):
    cpu_sim = pytest.importorskip("formers.bytes.cpu_sim")
    path = tmp_path / "cpu.h5"
    cpu_sim.generate(path, {"train": 12, "val": 3, "test": 3}, min_program=1, max_program=20, seed=0, progress=False)
    files = cpu_sim.read_split(path, "train")
    window = 75  # header + 64 memory patches + states + end patch: programs above 8 instructions do not fit
    expected = sum(1 + 64 + (len(f) - 1024) // 16 + 1 > window for f in files)
    assert 0 < expected < len(files)
    dm = CPUSimDataModule(path=str(path), window_patches=window, batch_size=4)
    with pytest.warns(UserWarning, match="excluded files longer than the window"):
        dm.setup()
    assert dm.summary["excluded files longer than the window"]["train"] == expected
    train = dm.dataset("train")
    for i in range(len(train)):
        item = train[i]
        data = train.files[i]
        assert len(item) <= window and int(item.real_mask.sum()) == len(data) - cpu_sim.PREDICT_OFFSET
        assert torch.equal(item.patches[0], header_patch(cpu_sim.EXTENSION))
    inputs, target = next(iter(dm.train_dataloader()))
    assert inputs["patches"].shape[2] == 16 and target["real_mask"].shape == inputs["patches"].shape
    assert dm.state_dict()["extension"] == cpu_sim.EXTENSION and dm.model_sizes() == {"patch_length": window}
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        CPUSimDataModule(path=str(tmp_path / "missing.h5")).setup()


# ================================================================================================ real data
@needs(FSDD)
def test_real_fsdd_official_split():
    dm = FSDDDataModule(root=str(FSDD), batch_size=8)
    splits = dm.datasets
    assert {s: len(d) for s, d in splits.items()} == {"train": 2400, "val": 300, "test": 300}
    takes = {s: {int(p.stem.split("_")[2]) for p in d.paths} for s, d in splits.items()}
    assert takes["test"] == {0, 1, 2, 3, 4} and takes["val"] == {5, 6, 7, 8, 9}
    assert takes["train"] == set(range(10, 50)) and not (takes["train"] & (takes["val"] | takes["test"]))
    for dataset in splits.values():
        assert all(label == int(p.name.split("_")[0]) for p, label in zip(dataset.paths, dataset.labels, strict=True))
    assert dm.cut_files == {"train": 0, "val": 0, "test": 0}  # 36,568 bytes = FSDD's longest file
    inputs, target = collate_bytes([splits["test"][i] for i in range(0, 300, 60)])
    assert bytes(inputs["tokens"][0, :4].tolist()) == b"RIFF" and int(inputs["lengths"].max()) <= 36_568
    assert (inputs["tokens"] == PAD).sum() == (inputs["lengths"].max() - inputs["lengths"]).sum()


@needs(CIFAR)
def test_real_cifar_tar_index_and_tiff_bytes():
    dm = ImageBytesDataModule(archive=str(CIFAR), encoding="tiff")
    members = dm.split_members()
    assert {s: len(m) for s, m in members.items()} == {"train": 45_000, "val": 5_000, "test": 10_000}
    assert dm.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert members["val"][0][0] == "train/airplane/4500.jpg" and members["test"][-1][0] == "test/truck/0999.jpg"
    limited = ImageBytesDataModule(archive=str(CIFAR), encoding="tiff", limit_per_class=2)
    limited.classes, limited._members = dm.classes, dm._members  # the index read above
    test = limited.dataset("test")
    assert len(test) == 20 and {test[i][1] for i in range(20)} == set(range(10))
    sizes = {len(test[i][0]) for i in range(20)}
    assert len(sizes) == 1 and bytes(test[0][0][:4].tolist()) == b"II*\x00"


@needs(SHAKESPEARE)
def test_real_tiny_shakespeare_counts_every_test_byte_once():
    dm = ByteLMDataModule(str(SHAKESPEARE), kind="text", window_patches=64, chunk_bytes=5000)
    splits = dm.datasets
    assert sum(dm.summary["bytes"].values()) == 1_115_394
    assert dm.summary["bytes"]["test"] == 111_539 and dm.summary["bytes"]["val"] == 55_770
    test = splits["test"]
    assert sum(int(test[i].real_mask.sum()) for i in range(len(test))) == 111_539


@needs(CPYTHON)
def test_real_cpython_split():
    with pytest.warns(UserWarning, match="skipped empty files"):
        dm = ByteLMDataModule(str(CPYTHON), kind="files", window_patches=512)
        dm.setup()
    docs = dm.summary["documents"]
    assert sum(docs.values()) + sum(dm.summary["skipped empty files"].values()) == 703
    assert docs["val"] + dm.summary["skipped empty files"]["val"] == 35
    assert docs["test"] + dm.summary["skipped empty files"]["test"] == 70
    assert dm.split_names["test"] == sorted(dm.split_names["test"])
    assert (
        max(dm.split_names["train"])
        < min(dm.split_names["val"])
        <= max(dm.split_names["val"])
        < min(dm.split_names["test"])
    )
    test = dm.dataset("test")
    largest = max(range(len(test.documents)), key=lambda d: len(test.documents[d]))
    windows = [i for i, w in enumerate(test.windows) if w[0] == largest]
    assert len(windows) > 1
    assert sum(int(test[i].real_mask.sum()) for i in windows) == len(test.documents[largest])


@needs(NOTTINGHAM)
def test_real_nottingham_conversion_pairs():
    with pytest.warns(UserWarning, match="excluded pairs"):
        dm = ConversionDataModule(root=str(NOTTINGHAM), window_patches=512)
        dm.setup()
    excluded = dm.summary["excluded pairs longer than the window"]
    assert sum(excluded.values()) == 29 and sum(dm.summary["pairs"].values()) == 1005  # SOURCES.md: 1005 fit
    assert dm.summary["pairs"] == {"train": 855, "val": 47, "test": 103}
    item = dm.dataset("test")[0]
    tune = dm.dataset("test").tunes[0]
    assert bytes(item.patches.flatten()[item.real_mask.flatten()].tolist()) == tune.midi

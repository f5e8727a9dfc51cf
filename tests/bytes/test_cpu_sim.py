"""bGPT's CPU-state simulation (formers.bytes.cpu_sim): every opcode against hand-computed answers, the file layout,
the byte-exact check, random programs, and the HDF5 generator / CLI (tiny sizes).

Expected values are worked out by hand from the rules of sanderwood/bgpt @ 56b98d6 ``cpu-simulation.py``
(``_execute``, ``_fetch``, ``run``, ``random_program``); the pinned files at the end were written by that script.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from formers.bytes import cpu_sim as cs
from formers.bytes import patches

# Registers A..J (R0..R9) at the start of every opcode case.
REGS = [10, 20, 30, 0, 255, 193, 15, 12, 5, 7]
A, B, C, D, E, F, G, H, I, J = range(10)  # noqa: E741 - the official register names


def final(lines: list[str], acc: int = 0, regs: list[int] = REGS) -> tuple[int, list[int]]:
    """ACC and registers after running ``lines`` then HLT: the state recorded when HLT is fetched."""
    states = cs.simulate(cs.assemble([*lines, "HLT"]), cs.initial_state(acc, regs))
    return states[-1][1], list(states[-1][6:])


def changed(**updates: int) -> list[int]:
    regs = list(REGS)
    for name, value in updates.items():
        regs["ABCDEFGHIJ".index(name)] = value
    return regs


# ------------------------------------------------------------------------------------------------ opcode semantics

# (initial ACC, program, expected ACC, expected registers), each worked out by hand.
CASES = [
    # CLR: zero the accumulator or the register
    (7, ["CLR"], 0, REGS),
    (7, ["CLR B"], 7, changed(B=0)),
    # INC saturates at 255
    (254, ["INC", "INC"], 255, REGS),
    (0, ["INC A"], 0, changed(A=11)),
    (0, ["INC E"], 0, REGS),  # E = 255 stays 255
    # DEC saturates at 0
    (1, ["DEC", "DEC"], 0, REGS),
    (0, ["DEC D", "DEC A"], 0, changed(A=9)),  # D = 0 stays 0
    # SHL / SHR drop the bit shifted out: 193 = 0b11000001
    (193, ["SHL"], 0b10000010, REGS),
    (0, ["SHL F"], 0, changed(F=130)),
    (193, ["SHR"], 0b01100000, REGS),
    (0, ["SHR E"], 0, changed(E=127)),
    # ROL / ROR wrap the bit around
    (193, ["ROL"], 0b10000011, REGS),
    (0, ["ROL A"], 0, changed(A=20)),  # 0b00001010 -> 0b00010100
    (193, ["ROR"], 0b11100000, REGS),
    (1, ["ROR"], 128, REGS),
    (0, ["ROR A"], 0, changed(A=5)),
    # NOT: 8-bit complement
    (0x0F, ["NOT"], 0xF0, REGS),
    (0, ["NOT E"], 0, changed(E=0)),
    # PUSH = ACC <- register, POP = register <- ACC: no stack, a second PUSH overwrites the first
    (0, ["PUSH B"], 20, REGS),
    (0, ["PUSH A", "PUSH B", "POP C"], 20, changed(C=20)),
    (99, ["POP D"], 99, changed(D=99)),
    # LOADI: immediate byte
    (3, ["LOADI 77"], 77, REGS),
    (3, ["LOADI 0"], 0, REGS),
    # SWAP: with the accumulator (one operand) or between registers (two)
    (99, ["SWAP A"], 10, changed(A=99)),
    (99, ["SWAP A B"], 99, changed(A=20, B=10)),
    # ADD: ACC += R[a1]; R[a1] += R[a2]; R[a3] = R[a1] + R[a2]; saturating at 255
    (200, ["ADD B"], 220, REGS),
    (250, ["ADD B"], 255, REGS),
    (0, ["ADD A B"], 0, changed(A=30)),
    (0, ["ADD E B"], 0, REGS),  # 255 + 20 -> 255
    (0, ["ADD A B D"], 0, changed(D=30)),
    # SUB saturates at 0
    (5, ["SUB A"], 0, REGS),
    (50, ["SUB C"], 20, REGS),
    (0, ["SUB A B"], 0, changed(A=0)),
    (0, ["SUB C A"], 0, changed(C=20)),
    (0, ["SUB B A D"], 0, changed(D=10)),
    # MUL saturates at 255
    (3, ["MUL I"], 15, REGS),
    (100, ["MUL I"], 255, REGS),
    (0, ["MUL H I"], 0, changed(H=60)),
    (0, ["MUL H H J"], 0, changed(J=144)),
    (0, ["MUL F C"], 0, changed(F=255)),
    # DIV rounds down; division by zero gives 255 in all three forms
    (17, ["DIV I"], 3, REGS),
    (17, ["DIV D"], 255, REGS),
    (0, ["DIV D"], 255, REGS),
    (0, ["DIV C G"], 0, changed(C=2)),
    (0, ["DIV A D"], 0, changed(A=255)),
    (0, ["DIV C I B"], 0, changed(B=6)),
    (0, ["DIV C D B"], 0, changed(B=255)),
    # AND / OR / XOR (J = 7 = 0b0111, G = 15, H = 12 = 0b1100)
    (12, ["AND J"], 4, REGS),
    (0, ["AND G H"], 0, changed(G=12)),
    (0, ["AND G H A"], 0, changed(A=12)),
    (12, ["OR J"], 15, REGS),
    (0, ["OR J H"], 0, changed(J=15)),
    (0, ["OR G H D"], 0, changed(D=15)),
    (12, ["XOR J"], 11, REGS),
    (0, ["XOR F F"], 0, changed(F=0)),
    (0, ["XOR A B C"], 0, changed(C=30)),
    # MOV: R[a1] = R[a2]
    (0, ["MOV A B"], 0, changed(A=20)),
    (0, ["MOV J E"], 0, changed(J=255)),
    # a sequence: ACC = 5, A = 11, ACC = 5 + 11, B = 16 * 16 -> 255, C = 255 / 30 = 8
    (0, ["LOADI 5", "INC A", "ADD A", "POP B", "MUL B B", "DIV B C C"], 16, changed(A=11, B=255, C=8)),
]


@pytest.mark.parametrize(("acc", "lines", "expected_acc", "expected_regs"), CASES)
def test_opcode_semantics(acc: int, lines: list[str], expected_acc: int, expected_regs: list[int]) -> None:
    assert final(lines, acc) == (expected_acc, expected_regs)


def test_assembly_encoding_and_round_trip() -> None:
    code = cs.assemble(["CLR", "CLR A", "LOADI 200", "SWAP A B", "ADD A B C", "MOV J A", "HLT"])
    assert list(code) == [1, 0, 0, 0, 1, 1, 0, 0, 11, 200, 0, 0, 12, 1, 2, 0, 13, 1, 2, 3, 20, 10, 1, 0, 0, 0, 0, 0]
    assert cs.disassemble(code) == ["CLR", "CLR A", "LOADI 200", "SWAP A B", "ADD A B C", "MOV J A", "HLT"]
    assert cs.OPCODES.index("MOV") == 20 and len(cs.OPCODES) == 21
    for bad in ["JMP A", "INC K", "LOADI 256", "ADD A B C D"]:
        with pytest.raises(ValueError, match="lines\\[0\\]"):
            cs.assemble([bad])


def test_full_trace_by_hand() -> None:
    """States are recorded after the fetch, before the execution: state k holds instruction k-1 in IR and the
    registers as instructions 0..k-2 left them."""
    program = cs.assemble(["LOADI 5", "INC A", "ADD A", "HLT"])
    initial = cs.initial_state(1, [10] + [0] * 9)
    expected = [
        [0, 1, 0, 0, 0, 0, 10],  # state 0: the initial state
        [1, 1, 11, 5, 0, 0, 10],  # LOADI 5 fetched, not yet executed
        [2, 5, 2, 1, 0, 0, 10],  # INC A fetched; ACC = 5
        [3, 5, 13, 1, 0, 0, 11],  # ADD A fetched; A = 11
        [4, 16, 0, 0, 0, 0, 11],  # HLT fetched; ACC = 5 + 11; nothing runs after it
    ]
    states = cs.simulate(program, initial)
    assert [list(s) for s in states] == [row + [0] * 9 for row in expected]
    data = cs.make_file(program, initial)
    assert len(data) == cs.MEMORY_SIZE + cs.STATE_SIZE * 5 == 1104
    assert data[:16] == program and data[16:1024] == bytes(1008)
    assert cs.simulate(program)[0] == bytes(16)  # default state 0: all zeros


def test_hlt_stops_and_pc_saturates() -> None:
    states = cs.simulate(cs.assemble(["INC", "HLT", "INC", "INC"]))
    assert len(states) == 3 and states[-1][1] == 1  # the INCs after HLT never run
    assert cs.disassemble(cs.assemble(["INC", "HLT", "INC"])) == ["INC", "HLT"]
    # 256 instructions fill the memory: the PC saturates at 255 for the last two states
    states = cs.simulate(cs.assemble(["INC"] * 255 + ["HLT"]), cs.initial_state(3, [0] * 10))
    assert len(states) == 257
    assert [s[0] for s in states] == list(range(256)) + [255]
    assert states[-1][1] == 255 and states[-1][2:6] == bytes(4)
    # initial PC from state 0 is where execution starts (the official evaluation takes it from the file)
    states = cs.simulate(cs.assemble(["INC", "INC", "LOADI 9", "HLT"]), bytes([2]) + bytes(15))
    assert [s[0] for s in states] == [2, 3, 4] and states[-1][1] == 9


def test_register_operand_zero_is_r9_as_official() -> None:
    """The official code indexes registers[a - 1]: a = 0 where a register is required means R9 (index -1)."""
    states = cs.simulate(bytes([9, 0, 0, 0, 20, 1, 0, 0]), cs.initial_state(0, REGS))  # PUSH (0); MOV A (0)
    assert states[-1][1] == REGS[J] and states[-1][6] == REGS[J]


def test_invalid_programs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"instruction 1 \(byte 4\): invalid opcode 21"):
        cs.simulate(bytes([2, 0, 0, 0, 21, 0, 0, 0]))
    with pytest.raises(ValueError, match="register operand 11"):
        cs.simulate(bytes([13, 1, 11, 0]))
    with pytest.raises(ValueError, match="never halts"):
        cs.simulate(bytes([2, 0, 0, 0]) * 256)
    with pytest.raises(ValueError, match="4-byte instructions"):
        cs.simulate(bytes(6))
    with pytest.raises(ValueError, match="4-byte instructions"):
        cs.simulate(bytes(1028))
    with pytest.raises(ValueError, match="initial"):
        cs.simulate(bytes(4), bytes(15))
    # LOADI's operand is a byte, not a register
    assert cs.simulate(bytes([11, 250, 0, 0]))[-1][1] == 250


# ------------------------------------------------------------------------------------------ random programs, layout


def _slots(data: bytes) -> list[bytes]:
    return [data[i : i + 4] for i in range(0, cs.MEMORY_SIZE, 4)]


def test_random_files_layout_and_patch_alignment() -> None:
    rng = random.Random(0)
    for _ in range(40):
        data = cs.random_file(rng, 1, 255)
        slots = _slots(data)
        n = [s[0] for s in slots].index(0) + 1  # instructions executed, HLT included
        assert len(data) == cs.MEMORY_SIZE + cs.STATE_SIZE * (n + 1)
        states = [data[i : i + 16] for i in range(cs.STATES_OFFSET, len(data), 16)]
        assert states[0][0] == 0 and states[0][2:6] == bytes(4)  # PC 0, IR empty
        for k in range(1, n + 1):
            assert states[k][0] == min(k, 255) and states[k][2:6] == slots[k - 1]
        assert cs.check_file(data) == (True, None)
    # bGPT sees the file with the "bin" header: patch 1 + i = memory row i, patch 65 + k = state k
    seq = patches.file_sequence(data, cs.EXTENSION)
    assert cs.EXTENSION == "bin" and seq.patches[0, :3].tolist() == list(b"bin")
    assert len(seq) == 1 + len(data) // 16 + 1
    assert bytes(seq.patches[1:65].flatten().tolist()) == data[:1024]
    assert bytes(seq.patches[65 + 3].tolist()) == states[3]
    assert cs.STATES_OFFSET == 1024 and cs.PREDICT_OFFSET == 1040 and (cs.MEMORY_SIZE, cs.STATE_SIZE) == (1024, 16)


def test_random_program_operand_ranges_follow_the_official_sampler() -> None:
    rng = random.Random(1)
    instructions = []
    lengths = set()
    for _ in range(150):
        slots = _slots(cs.random_program(rng, 1, 255))
        n = [s[0] for s in slots].index(0) + 1
        lengths.add(n)
        assert all(s == bytes(4) for s in slots[n - 1 :])  # HLT then zeros
        instructions += slots[: n - 1]
    assert min(lengths) >= 1 and max(lengths) <= 255 and len(lengths) > 50
    assert {s[0] for s in instructions} == set(range(1, 21))  # every opcode but HLT
    forms = set()
    for op, a1, a2, a3 in instructions:
        name = cs.OPCODES[op]
        if name == "LOADI":
            assert a2 == a3 == 0
            continue
        assert all(0 <= a <= 10 for a in (a1, a2, a3))
        count = sum(a > 0 for a in (a1, a2, a3))
        assert [a > 0 for a in (a1, a2, a3)] == [True] * count + [False] * (3 - count)  # operands fill from a1
        forms.add((name, count))
    unary = ["CLR", "INC", "DEC", "SHL", "SHR", "ROL", "ROR", "NOT"]
    binary = ["ADD", "SUB", "MUL", "DIV", "AND", "OR", "XOR"]
    expected = {(n, c) for n in unary for c in (0, 1)} | {(n, c) for n in binary for c in (1, 2, 3)}
    expected |= {("PUSH", 1), ("POP", 1), ("SWAP", 1), ("SWAP", 2), ("MOV", 2)}
    assert forms == expected
    loadi = [a1 for op, a1, _, _ in instructions if op == 11]
    assert min(loadi) < 20 and max(loadi) > 235
    for k in (1, 2, 256):  # exact lengths; 256 fills the memory
        slots = _slots(cs.random_program(rng, k, k))
        assert [s[0] for s in slots].index(0) == k - 1
    for lo, hi in [(0, 5), (6, 5), (1, 257)]:
        with pytest.raises(ValueError, match="min_len, max_len"):
            cs.random_program(rng, lo, hi)


def test_random_files_are_seeded() -> None:
    first = [cs.random_file(random.Random(3), 1, 50) for _ in range(2)]
    assert first[0] == first[1]
    assert cs.random_file(random.Random(4), 1, 50) != first[0]


def test_matches_files_written_by_the_official_script() -> None:
    """Pinned from ``cpu-simulation.py --mode generate`` (56b98d6): the official stream is random.seed(s), then per
    file the initial ACC and registers, the length, the program; files are named by program_md5."""
    # random.seed(4), lengths 3..3: ACC 120, E = 79; NOT E -> E = 176 (0xb0); ROL -> ACC = 240 (0xf0), checked by hand
    data = cs.random_file(random.Random(4), 3, 3)
    assert cs.disassemble(data[:1024]) == ["NOT E", "ROL", "HLT"]
    assert data[:12].hex() == "080500000600000000000000" and data[12:1024] == bytes(1012)
    assert data[1024:].hex() == (
        "0078000000009b34caf54f2e220acd94"
        "0178080500009b34caf54f2e220acd94"
        "0278060000009b34caf5b02e220acd94"
        "03f0000000009b34caf5b02e220acd94"
    )
    assert cs.program_md5(data[:1024]) == "7109c1dba4161047d07140ceaa55bd7d"
    # random.seed(0), the README's lengths 1..255: the first three training files
    rng = random.Random(0)
    pinned = [
        ("df6323f5f2cb0f7230b92220eef1d2e0", "c57ef63001a94af0b1d7f463d0255131c3ba1b2496c7fee8dc093aee50e87452", 2208),
        ("1ca046b46cc53c81e4555d85b5420d99", "229110865bc048fd9352e50d9c308df149b8807231c9bd58db37e87b099bf5a0", 3296),
        ("edb2ad6cccbb4933f60f082a87b2c2a6", "be4e86e147cef78f0682e624b7cb60ece8237f179e699437a3473bd6eb8fb088", 3024),
    ]
    for name, sha, size in pinned:
        data = cs.random_file(rng, 1, 255)
        assert (cs.program_md5(data[:1024]), hashlib.sha256(data).hexdigest(), len(data)) == (name, sha, size)


# ------------------------------------------------------------------------------------------------------ evaluation


def test_check_file_finds_a_single_wrong_byte_and_its_state() -> None:
    data = cs.random_file(random.Random(5), 30, 40)
    n_states = (len(data) - cs.STATES_OFFSET) // 16
    total = len(data) - cs.PREDICT_OFFSET
    assert cs.check_file(data) == (True, None) and cs.score_file(data) == (total, total)
    for pos in [cs.PREDICT_OFFSET, 1100, 1111, len(data) - 1]:
        bad = bytearray(data)
        bad[pos] ^= 0x01
        assert cs.check_file(bytes(bad)) == (False, (pos - cs.STATES_OFFSET) // 16)
        assert cs.score_file(bytes(bad)) == (total - 1, total)
    # missing states are wrong; extra bytes are wrong unless strict_length=False (the official check ignores them)
    assert cs.check_file(data[:-20]) == (False, n_states - 2)
    assert cs.score_file(data[:-20]) == (total - 20, total)
    assert cs.check_file(data + bytes(16)) == (False, n_states)
    assert cs.check_file(data + bytes(16), strict_length=False) == (True, None)
    assert cs.score_file(data + bytes(16)) == (total, total)
    # state 0 is given (not judged): another initial state is simply another valid run
    other = cs.make_file(data[:1024], cs.initial_state(0, [1] * 10))
    assert cs.check_file(other) == (True, None)
    with pytest.raises(ValueError, match="1040 bytes"):
        cs.check_file(data[:1039])


# ---------------------------------------------------------------------------------------------- dataset and CLI


def _args(out: Path, *extra: str) -> list[str]:
    return ["--out", str(out), "--train", "30", "--val", "10", "--test", "10", "--max-program", "2", *extra]


def test_cli_writes_distinct_programs_per_split(tmp_path: Path) -> None:
    out = tmp_path / "cpu.h5"
    cs.main(_args(out, "--seed", "3"))
    splits = {name: cs.read_split(out, name) for name in ("train", "val", "test")}
    assert {name: len(files) for name, files in splits.items()} == {"train": 30, "val": 10, "test": 10}
    names = [cs.program_md5(f[:1024]) for files in splits.values() for f in files]
    # lengths 1..2 draw the one-instruction program "HLT" half the time: repeats are redrawn, none is kept twice
    assert len(set(names)) == 50
    files = [f for split in splits.values() for f in split]
    assert all(cs.check_file(f) == (True, None) and len(f) in (1024 + 2 * 16, 1024 + 3 * 16) for f in files)
    with h5py.File(out) as f:
        attrs = dict(f.attrs)
        assert f["train"].dtype == h5py.vlen_dtype("uint8")
    assert attrs["seed"] == 3 and attrs["min_program"] == 1 and attrs["max_program"] == 2
    assert attrs["num_train"] == 30 and attrs["extension"] == "bin" and attrs["predict_offset"] == 1040
    assert attrs["rejected_duplicates"] > 0 and attrs["generated_seconds"] > 0 and "formers_bytes_version" in attrs
    assert not (tmp_path / "cpu.h5.tmp").exists()
    # same seed -> same files; another seed -> other files
    cs.main(_args(tmp_path / "again.h5", "--seed", "3"))
    assert cs.read_split(tmp_path / "again.h5", "test") == splits["test"]
    cs.main(_args(tmp_path / "other.h5", "--seed", "4"))
    assert cs.read_split(tmp_path / "other.h5", "train") != splits["train"]


def test_refuses_to_overwrite_and_leaves_no_half_file(tmp_path: Path) -> None:
    out = tmp_path / "cpu.h5"
    cs.generate(out, {"train": 3, "test": 1}, max_program=5, progress=False)
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match=r"cpu\.h5 already exists.*overwrite"):
        cs.main(_args(out))
    assert out.read_bytes() == before
    cs.generate(out, {"train": 2, "test": 0}, max_program=5, seed=1, overwrite=True, progress=False)
    assert len(cs.read_split(out, "train")) == 2 and cs.read_split(out, "test") == []
    # too few programs for the sizes asked: a clear error and no file, no temp file
    with pytest.raises(ValueError, match="too few programs of 1..1 instructions"):
        cs.generate(tmp_path / "tiny.h5", {"train": 2}, min_program=1, max_program=1, progress=False)
    assert not (tmp_path / "tiny.h5").exists() and not (tmp_path / "tiny.h5.tmp").exists()
    with pytest.raises(ValueError, match="min_len, max_len"):
        cs.generate(tmp_path / "x.h5", {"train": 1}, max_program=300, progress=False)


def test_read_split_errors_name_file_and_split(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.h5.*python -m formers\.bytes\.cpu_sim"):
        cs.read_split(tmp_path / "missing.h5", "train")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"notes\.h5: not a readable HDF5 file"):
        cs.read_split(text, "train")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["train"] = [1, 2, 3]
    with pytest.raises(ValueError, match=r"other\.h5: not a CPU-simulation dataset"):
        cs.read_split(other, "train")
    out = tmp_path / "cpu.h5"
    cs.generate(out, {"train": 2, "val": 1}, max_program=4, progress=False)
    with pytest.raises(KeyError, match=r"cpu\.h5: no split 'test' \(splits in the file: \['train', 'val'\]\)"):
        cs.read_split(out, "test")


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "cli.h5"
    args = ["--out", str(out), "--train", "2", "--val", "1", "--test", "1", "--max-program", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "formers.bytes.cpu_sim", *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    assert len(cs.read_split(out, "val")) == 1

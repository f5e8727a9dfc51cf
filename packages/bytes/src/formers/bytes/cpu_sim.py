"""bGPT's CPU-state simulation data: a toy CPU, its random programs, the file format and its byte-exact check.

Semantics of sanderwood/bgpt @ 56b98d6 ``cpu-simulation.py`` (reference note section 1.4), re-implemented:

- **Machine**: ``PC``, accumulator ``ACC``, a 4-byte instruction register ``IR``, 10 registers ``R0..R9`` (the
  official assembly calls them ``A..J``) and a 1024-byte memory holding the program, 4 bytes per instruction
  ``[op, a1, a2, a3]`` (256 slots). Nothing writes memory and there are no jumps: execution is linear from slot 0
  to the first ``HLT``. Register operands are 1-based (``1..10`` = ``R0..R9``); 0 means "the accumulator" or "no
  operand", per opcode (table below).
- **Step**: fetch ``IR = memory[4 PC : 4 PC + 4]``, ``PC = min(PC + 1, 255)`` (the PC saturates at the last slot),
  **record the state**, then execute (``HLT`` stops). So the state recorded at step ``k`` holds the instruction
  just fetched in ``IR`` and the registers as they were *before* executing it; the effect of the last instruction
  before ``HLT`` shows in the state recorded when ``HLT`` is fetched.
- **Values** stay in ``0..255``: ``INC``/``ADD``/``MUL`` saturate at 255, ``DEC``/``SUB`` at 0, shifts and rotates
  are masked to 8 bits, ``DIV`` by zero gives 255, ``DIV`` rounds down.

Opcodes (``R[a]`` = the register operand ``a`` names, ``1..10`` = ``R0..R9``; ``x`` = ``R[a1]``, or ``ACC`` when
``a1`` is 0):

====== == ==========================================================================================================
HLT    0  stop
CLR    1  ``a1 == 0``: ACC = 0; else R[a1] = 0 (likewise INC, DEC, SHL, SHR, ROL, ROR, NOT on ACC or R[a1])
INC    2  x = min(x + 1, 255)
DEC    3  x = max(x - 1, 0)
SHL    4  x = (x << 1) & 255
SHR    5  x = x >> 1
ROL    6  x = ((x << 1) & 255) | (x >> 7)
ROR    7  x = (x >> 1) | ((x << 7) & 255)
NOT    8  x = ~x & 255
PUSH   9  ACC = R[a1]  (no stack: "push register to accumulator")
POP    10 R[a1] = ACC  (no stack: "pop accumulator to register")
LOADI  11 ACC = a1 (an immediate byte 0..255)
SWAP   12 ``a2 == 0``: swap ACC and R[a1]; else swap R[a1] and R[a2]
ADD    13 ``a2 == 0``: ACC = f(ACC, R[a1]); ``a3 == 0``: R[a1] = f(R[a1], R[a2]); else R[a3] = f(R[a1], R[a2]),
          with f(x, y) = min(x + y, 255); the same three forms for SUB 14: max(x - y, 0), MUL 15: min(x y, 255),
          DIV 16: 255 if y == 0 else x // y, AND 17, OR 18, XOR 19: bitwise
MOV    20 R[a1] = R[a2]
====== == ==========================================================================================================

A register operand 0 where a register is required (``PUSH`` with ``a1 = 0``, ``MOV`` with ``a2 = 0``, ...) reads
and writes ``R9``: the official code indexes ``registers[a - 1]`` and Python's index -1 is the last register.
Random programs never contain such instructions; :func:`simulate` keeps the official behaviour for hand-written ones.

**Random programs** (:func:`random_program`, official ``random_program``): a length ``n`` uniform in
``[min_len, max_len]`` (official 1..255), ``n - 1`` random instructions, then ``HLT``. Each instruction: an opcode
uniform over the 20 non-HLT opcodes; ``LOADI`` takes a byte uniform in 0..255; the others take a number of
register operands uniform over the forms the opcode has (CLR..NOT: 0 or 1; PUSH, POP: 1; SWAP: 1 or 2; ADD..XOR:
1, 2 or 3; MOV: 2), each register uniform over the 10. The initial state (:func:`random_initial_state`) has
``PC = 0``, ``IR = 0``, and ``ACC`` and every register uniform in 0..255. The draws follow the official call order,
so ``random_file(random.Random(s), 1, 255)`` reproduces the first file of the official ``--random_seed s`` run
byte for byte.

**File** (official ``run``; extension :data:`EXTENSION` ``"bin"``, the bGPT header patch holds ``b"bin"``)::

    [memory image: 1024 bytes] [state 0: initial] [state 1] ... [state n]      one state = 16 bytes
    state = [PC, ACC, IR0, IR1, IR2, IR3, R0, ..., R9]

A program of ``n`` instructions (``HLT`` included) gives ``n + 1`` states, ``1024 + 16 (n + 1)`` bytes: the
initial state is written before the first fetch, then one state per executed instruction. Both parts are
multiples of 16, so with bGPT's header patch, patch ``1 + i`` (``i < 64``) is memory row ``i`` and patch ``65 + k``
is state ``k``. State 0 is *not* predictable from the program (``ACC`` and the registers are random): the official
evaluation takes it from the file and compares from :data:`PREDICT_OFFSET` = 1040 on (:func:`check_file`,
:func:`score_file`). :data:`STATES_OFFSET` = 1024 is where the states start.

Files are named (official) by the MD5 of the program's assembly text (:func:`program_md5`); the generator
(:func:`generate`, ``python -m formers.bytes.cpu_sim``) uses it to keep every program at most once in the whole
dataset, so no test program appears in train (the official script only dedupes within a split, by overwriting).

Run time (pure Python, one core): 0.5-1 ms per file with lengths 1..255 on the shared 2-core development machine,
i.e. about 20-40 minutes and 6.6 GB (3.1 KB per file) for the README's 2.1 M + 21 k files. A later split cannot
hold the programs of an earlier one: with the README's sizes, train holds the lone ``HLT`` and about 85 % (by
probability) of the two-instruction programs, so about 0.7 % of the test draws are redrawn and test has fewer very
short programs than train (the official test set instead repeats such train programs).

CLI (``--train 2100000 --test 21000 --min-program 1 --max-program 255 --seed 0`` are the README's settings)::

    python -m formers.bytes.cpu_sim --out data/bytes/cpu.h5 [--train N --val N --test N --min-program 1 \\
        --max-program 255 --seed 0 --overwrite]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

__all__ = [
    "EXTENSION",
    "MAX_PROGRAM",
    "MEMORY_SIZE",
    "NUM_REGISTERS",
    "OPCODES",
    "PREDICT_OFFSET",
    "STATES_OFFSET",
    "STATE_SIZE",
    "assemble",
    "check_file",
    "disassemble",
    "generate",
    "initial_state",
    "main",
    "make_file",
    "program_md5",
    "random_file",
    "random_initial_state",
    "random_program",
    "read_split",
    "score_file",
    "simulate",
]

MEMORY_SIZE = 1024
NUM_REGISTERS = 10
INSTRUCTION_SIZE = 4
NUM_SLOTS = MEMORY_SIZE // INSTRUCTION_SIZE  # 256 instruction slots; the PC saturates at the last one
MAX_PROGRAM = NUM_SLOTS  # longer programs do not fit the memory (the official code would grow the memory)
STATE_SIZE = 2 + INSTRUCTION_SIZE + NUM_REGISTERS  # PC, ACC, IR, R0..R9 = 16 = bGPT's patch size
EXTENSION = "bin"  # official file suffix; bGPT's header patch holds these bytes
STATES_OFFSET = MEMORY_SIZE  # the first state byte
PREDICT_OFFSET = MEMORY_SIZE + STATE_SIZE  # the first byte the official evaluation compares (after state 0)
DATASET_TAG = "formers.bytes.cpu_sim"  # root attribute "dataset" of the generated HDF5 files

OPCODES = (
    "HLT", "CLR", "INC", "DEC", "SHL", "SHR", "ROL", "ROR", "NOT", "PUSH", "POP",
    "LOADI", "SWAP", "ADD", "SUB", "MUL", "DIV", "AND", "OR", "XOR", "MOV",
)  # fmt: skip
_OP = {name: code for code, name in enumerate(OPCODES)}
_LOADI = _OP["LOADI"]
_REGISTER_NAMES = "ABCDEFGHIJ"  # official assembly names of R0..R9 (operand values 1..10)

# Operand forms the official sampler draws from, in its (dict) order: number of register operands per opcode.
_FORMS: dict[int, tuple[int, ...]] = {
    **{_OP[name]: (0, 1) for name in ("CLR", "INC", "DEC", "SHL", "SHR", "ROL", "ROR", "NOT")},
    _OP["PUSH"]: (1,),
    _OP["POP"]: (1,),
    _OP["LOADI"]: (1,),  # an immediate byte, not a register
    _OP["SWAP"]: (1, 2),
    **{_OP[name]: (1, 2, 3) for name in ("ADD", "SUB", "MUL", "DIV", "AND", "OR", "XOR")},
    _OP["MOV"]: (2,),
}
_SAMPLED_OPS = tuple(range(1, len(OPCODES)))  # every opcode but HLT, in the official order
_REGISTER_OPERANDS = tuple(range(1, NUM_REGISTERS + 1))

_UNARY: dict[int, Callable[[int], int]] = {
    _OP["CLR"]: lambda x: 0,
    _OP["INC"]: lambda x: min(x + 1, 255),
    _OP["DEC"]: lambda x: max(x - 1, 0),
    _OP["SHL"]: lambda x: (x << 1) & 0xFF,
    _OP["SHR"]: lambda x: x >> 1,
    _OP["ROL"]: lambda x: ((x << 1) & 0xFF) | (x >> 7),
    _OP["ROR"]: lambda x: (x >> 1) | ((x << 7) & 0xFF),
    _OP["NOT"]: lambda x: ~x & 0xFF,
}
_BINARY: dict[int, Callable[[int, int], int]] = {
    _OP["ADD"]: lambda x, y: min(x + y, 255),
    _OP["SUB"]: lambda x, y: max(x - y, 0),
    _OP["MUL"]: lambda x, y: min(x * y, 255),
    _OP["DIV"]: lambda x, y: 255 if y == 0 else x // y,
    _OP["AND"]: lambda x, y: x & y,
    _OP["OR"]: lambda x, y: x | y,
    _OP["XOR"]: lambda x, y: x ^ y,
}


# ------------------------------------------------------------------------------------------------------- the machine


def _memory_image(program: bytes | bytearray, name: str = "program") -> bytes:
    """``program`` zero-padded to the 1024-byte memory (zeros = ``HLT``), refusing what does not fit."""
    program = bytes(program)
    if len(program) > MEMORY_SIZE or len(program) % INSTRUCTION_SIZE:
        raise ValueError(
            f"{name}: expected a whole number of 4-byte instructions, at most {MEMORY_SIZE} bytes, got {len(program)}"
        )
    return program + bytes(MEMORY_SIZE - len(program))


@functools.lru_cache(maxsize=1 << 16)
def _problem(ir: bytes) -> str | None:
    """Why the official assembler cannot write the instruction ``ir`` (its evaluation would fail on it), or None."""
    op, *operands = ir
    if op >= len(OPCODES):
        return f"invalid opcode {op}"
    registers = operands[1:] if op == _LOADI else operands  # LOADI's first operand is an immediate byte
    if max(registers) > NUM_REGISTERS:
        return f"{OPCODES[op]} {operands} names register operand {max(registers)}; operands are 0..{NUM_REGISTERS}"
    return None


def _instruction(memory: bytes, slot: int) -> bytes:
    """The 4 bytes of instruction ``slot``, refusing one the official assembler cannot write."""
    ir = memory[INSTRUCTION_SIZE * slot : INSTRUCTION_SIZE * slot + INSTRUCTION_SIZE]
    problem = _problem(ir)
    if problem is not None:
        raise ValueError(f"program: instruction {slot} (byte {INSTRUCTION_SIZE * slot}): {problem}")
    return ir


def _execute(op: int, a1: int, a2: int, a3: int, acc: int, regs: list[int]) -> int:
    """Execute one non-HLT instruction on ``regs`` (in place); return the new ACC.

    ``regs[a - 1]`` with ``a = 0`` is ``regs[-1]`` = R9, as in the official code (see the module docstring).
    """
    if op in _UNARY:
        if a1 == 0:
            return _UNARY[op](acc)
        regs[a1 - 1] = _UNARY[op](regs[a1 - 1])
    elif op in _BINARY:
        f = _BINARY[op]
        if a2 == 0:
            return f(acc, regs[a1 - 1])
        regs[(a1 if a3 == 0 else a3) - 1] = f(regs[a1 - 1], regs[a2 - 1])
    elif op == _OP["PUSH"]:
        return regs[a1 - 1]
    elif op == _OP["POP"]:
        regs[a1 - 1] = acc
    elif op == _LOADI:
        return a1
    elif op == _OP["SWAP"]:
        if a2 == 0:
            acc, regs[a1 - 1] = regs[a1 - 1], acc
        else:
            regs[a1 - 1], regs[a2 - 1] = regs[a2 - 1], regs[a1 - 1]
    elif op == _OP["MOV"]:
        regs[a1 - 1] = regs[a2 - 1]
    else:  # pragma: no cover - _instruction refuses unknown opcodes first
        raise ValueError(f"invalid opcode {op}")
    return acc


def initial_state(acc: int = 0, registers: Sequence[int] = (0,) * NUM_REGISTERS) -> bytes:
    """The 16-byte state 0 ``[PC = 0, ACC, IR = 0 0 0 0, R0..R9]``."""
    if len(registers) != NUM_REGISTERS:
        raise ValueError(f"registers: expected {NUM_REGISTERS} values, got {len(registers)}")
    values = [acc, *registers]
    if any(not 0 <= int(v) <= 255 for v in values):
        raise ValueError(f"acc, registers: expected bytes 0..255, got acc={acc}, registers={list(registers)}")
    return bytes([0, acc, 0, 0, 0, 0, *registers])


def simulate(program: bytes, initial: bytes | None = None) -> list[bytes]:
    """Run ``program`` from the state ``initial``; return the recorded 16-byte states, state 0 (= ``initial``) first.

    ``program``: up to 1024 bytes of 4-byte instructions (zero-padded to the memory image). ``initial``: the 16-byte
    state 0 ``[PC, ACC, IR, R0..R9]`` (default all zeros); its ``PC`` is where execution starts (0 in every
    generated file) and its ``IR`` is only recorded. Returns ``n + 1`` states for ``n`` executed instructions (the
    final ``HLT`` included). Raises ``ValueError`` for an executed instruction with an opcode above 20 or a register
    operand above 10, and for a program with no ``HLT`` at or after the start (the saturated PC would repeat the
    last slot forever).
    """
    memory = _memory_image(program)
    state = bytes(initial) if initial is not None else bytes(STATE_SIZE)
    if len(state) != STATE_SIZE:
        raise ValueError(f"initial: expected a {STATE_SIZE}-byte state, got {len(state)} bytes")
    pc, acc, regs = state[0], state[1], list(state[6:])
    if all(memory[INSTRUCTION_SIZE * slot] != 0 for slot in range(pc, NUM_SLOTS)):
        raise ValueError(f"program: no HLT at or after instruction {pc}, it never halts")
    states = [state]
    while True:
        ir = _instruction(memory, pc)
        pc = min(pc + 1, NUM_SLOTS - 1)
        states.append(bytes([pc, acc, *ir, *regs]))  # recorded after the fetch, before the execution
        if ir[0] == _OP["HLT"]:
            return states
        acc = _execute(ir[0], ir[1], ir[2], ir[3], acc, regs)


def make_file(program: bytes, initial: bytes | None = None) -> bytes:
    """The official file: the 1024-byte memory image, then every state of :func:`simulate`."""
    return _memory_image(program) + b"".join(simulate(program, initial))


# ---------------------------------------------------------------------------------------------- assembly and names


def assemble(lines: Iterable[str]) -> bytes:
    """Machine code of official assembly lines (``"LOADI 7"``, ``"ADD A B C"``, ``"CLR"``; registers ``A..J``).

    Returns the instructions only (no padding, no implicit ``HLT``)."""
    code = bytearray()
    for i, line in enumerate(lines):
        name, *args = line.split()
        if name not in _OP or len(args) > 3:
            raise ValueError(f"lines[{i}]: {line!r} is not an instruction (opcodes: {', '.join(OPCODES)})")
        operands = []
        for j, arg in enumerate(args):
            if name == "LOADI" and j == 0:
                if not arg.isdigit() or int(arg) > 255:
                    raise ValueError(f"lines[{i}]: {line!r}: LOADI takes a byte 0..255")
                operands.append(int(arg))
            elif len(arg) == 1 and arg in _REGISTER_NAMES:
                operands.append(_REGISTER_NAMES.index(arg) + 1)
            else:
                raise ValueError(f"lines[{i}]: {line!r}: registers are A..J")
        code += bytes([_OP[name], *operands, *[0] * (3 - len(operands))])
    return bytes(code)


def disassemble(program: bytes) -> list[str]:
    """Official assembly of ``program`` up to and including its first ``HLT`` (the official ``back_translate``)."""
    memory = _memory_image(program)
    lines = []
    for slot in range(NUM_SLOTS):
        ir = _instruction(memory, slot)
        lines.append(_assembly(ir))
        if ir[0] == _OP["HLT"]:
            break
    return lines


@functools.lru_cache(maxsize=1 << 16)
def _assembly(ir: bytes) -> str:
    """Official text of one valid instruction (``back_translate``): ``"ADD A B"``, ``"LOADI 7"``, ``"CLR"``."""
    op, a1, a2, a3 = ir
    first = str(a1) if op == _LOADI else (_REGISTER_NAMES[a1 - 1] if a1 else "")
    rest = [_REGISTER_NAMES[a - 1] if a else "" for a in (a2, a3)]
    return " ".join([OPCODES[op], first, *rest]).strip()


def _program_digest(program: bytes) -> bytes:
    return hashlib.md5("".join(disassemble(program)).encode()).digest()


def program_md5(program: bytes) -> str:
    """The official file name (without ``.bin``): MD5 of the program's assembly lines joined without separator."""
    return _program_digest(program).hex()


# ------------------------------------------------------------------------------------------------ random programs


def _check_lengths(min_len: int, max_len: int) -> None:
    if not 1 <= min_len <= max_len <= MAX_PROGRAM:
        raise ValueError(
            f"min_len, max_len: expected 1 <= min_len <= max_len <= {MAX_PROGRAM} instructions (HLT included), "
            f"got {min_len}, {max_len}"
        )


def random_initial_state(rng: random.Random) -> bytes:
    """State 0 of a generated file: ``PC = 0``, ``IR = 0``, ``ACC`` and ``R0..R9`` uniform bytes (official order)."""
    acc = rng.randint(0, 255)
    return initial_state(acc, [rng.randint(0, 255) for _ in range(NUM_REGISTERS)])


def random_program(rng: random.Random, min_len: int = 1, max_len: int = 255) -> bytes:
    """A random program as its 1024-byte memory image: ``n ~ U{min_len..max_len}`` instructions, the last ``HLT``.

    Draws as the official ``random_program`` (module docstring), in its call order on ``rng``."""
    _check_lengths(min_len, max_len)
    code = bytearray()
    for _ in range(rng.randint(min_len, max_len) - 1):
        op = rng.choice(_SAMPLED_OPS)
        if op == _LOADI:
            code += bytes([op, rng.randint(0, 255), 0, 0])
            continue
        registers = [rng.choice(_REGISTER_OPERANDS) for _ in range(rng.choice(_FORMS[op]))]
        code += bytes([op, *registers, *[0] * (3 - len(registers))])
    return _memory_image(code)  # the zero padding holds the final HLT


def random_file(rng: random.Random, min_len: int = 1, max_len: int = 255) -> bytes:
    """One generated file: a random initial state, then a random program (the official draw order), simulated."""
    _check_lengths(min_len, max_len)
    initial = random_initial_state(rng)
    return make_file(random_program(rng, min_len, max_len), initial)


# ------------------------------------------------------------------------------------------------------ evaluation


def _truth(data: bytes) -> bytes:
    """The re-simulated file of ``data``'s program from ``data``'s state 0 (the official evaluation's truth)."""
    if len(data) < PREDICT_OFFSET:
        raise ValueError(
            f"data: a CPU-state file holds at least the {MEMORY_SIZE}-byte program and the {STATE_SIZE}-byte initial "
            f"state ({PREDICT_OFFSET} bytes), got {len(data)}"
        )
    program, initial = data[:MEMORY_SIZE], data[STATES_OFFSET:PREDICT_OFFSET]
    return program + b"".join(simulate(program, initial))


def check_file(data: bytes, *, strict_length: bool = True) -> tuple[bool, int | None]:
    """Byte-exact check of a (predicted) file: ``(True, None)``, or ``(False, k)`` with ``k`` the first wrong state.

    The truth re-simulates the file's own program from the file's own state 0 (the official evaluate mode), so
    only states ``1..n`` are judged; state ``k`` is ``data[1024 + 16 k : 1024 + 16 (k + 1)]`` (bGPT patch
    ``65 + k`` with the header). A missing state counts as wrong. Bytes after the last true state make the file
    wrong at state ``n + 1`` unless ``strict_length=False`` (the official evaluation ignores them).
    """
    data = bytes(data)
    truth = _truth(data)
    for start in range(PREDICT_OFFSET, len(truth), STATE_SIZE):
        if data[start : start + STATE_SIZE] != truth[start : start + STATE_SIZE]:
            return False, (start - STATES_OFFSET) // STATE_SIZE
    if strict_length and len(data) > len(truth):
        return False, (len(truth) - STATES_OFFSET) // STATE_SIZE
    return True, None


def score_file(data: bytes) -> tuple[int, int]:
    """``(matched, total)`` bytes of a (predicted) file as the official evaluation counts them.

    ``total`` = the true file's bytes from byte 1040 on (states 1..n); a byte matches when ``data`` has the same
    byte at the same position; missing bytes count as wrong and extra bytes are ignored. (The official loop counts
    one extra missing byte when ``data`` is short; that slip is not reproduced.)"""
    data = bytes(data)
    truth = _truth(data)
    predicted = np.frombuffer(data[PREDICT_OFFSET : len(truth)], dtype=np.uint8)
    expected = np.frombuffer(truth[PREDICT_OFFSET : PREDICT_OFFSET + len(predicted)], dtype=np.uint8)
    return int((predicted == expected).sum()), len(truth) - PREDICT_OFFSET


# ----------------------------------------------------------------------------------------------------- the dataset


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("formers-bytes")
    except PackageNotFoundError:
        return "unknown"


def _split_rngs(seed: int, splits: Sequence[str]) -> dict[str, random.Random]:
    """One independent ``random.Random`` per split, seeded from numpy's ``SeedSequence(seed).spawn``."""
    children = np.random.SeedSequence(seed).spawn(len(splits))
    return {
        name: random.Random(int(child.generate_state(1, np.uint64)[0]))
        for name, child in zip(splits, children, strict=True)
    }


_WRITE_CHUNK = 4096  # files written to HDF5 at a time (bounded memory for the README's 2.1 M files)
_MAX_REJECTIONS = 10_000  # consecutive duplicate draws before giving up (the length range has too few programs)


def _distinct_files(
    rng: random.Random, min_len: int, max_len: int, seen: set[bytes], rejected: list[int]
) -> Iterator[bytes]:
    """Endless :func:`random_file` draws whose program's MD5 is not in ``seen`` (added as they are yielded).

    Repeats are dropped and counted in ``rejected[0]``; ``_MAX_REJECTIONS`` repeats in a row mean the length range
    has run out of programs (``ValueError``)."""
    streak = 0
    while True:
        data = random_file(rng, min_len, max_len)
        digest = _program_digest(data[:MEMORY_SIZE])
        if digest not in seen:
            seen.add(digest)
            streak = 0
            yield data
            continue
        rejected[0] += 1
        streak += 1
        if streak >= _MAX_REJECTIONS:
            raise ValueError(
                f"min_program, max_program: {streak} draws in a row repeated a program already drawn; there are too "
                f"few programs of {min_len}..{max_len} instructions for this many distinct files ({len(seen)} so far)"
            )


def generate(
    out: str | os.PathLike[str],
    sizes: Mapping[str, int],
    *,
    min_program: int = 1,
    max_program: int = 255,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate ``sizes`` (``{"train": N, ...}``) distinct-program files into the HDF5 file ``out``; return its path.

    Layout: one variable-length ``uint8`` dataset per split at the root (``/train``, ``/val``, ``/test``), each
    element one whole file (:func:`make_file`); root attributes record the arguments, the run time and the format.
    Each split draws from its own stream (:func:`_split_rngs`); a draw whose program (:func:`program_md5`) is
    already in the dataset (this split or an earlier one, in ``sizes`` order) is dropped and redrawn, so every
    program appears once and later splits never share a program with earlier ones. Written to ``<out>.tmp`` and
    renamed when complete; an existing ``out`` is refused unless ``overwrite``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    _check_lengths(min_program, max_program)
    for name, size in sizes.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"sizes: split names must be non-empty strings without '/', got {name!r}")
        if size < 0:
            raise ValueError(f"sizes[{name!r}]: expected a non-negative number of files, got {size}")
    start = time.perf_counter()
    rngs = _split_rngs(seed, list(sizes))
    seen: set[bytes] = set()  # MD5 digests of every program drawn so far
    rejected = [0]  # duplicate draws dropped (all splits)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with (
            h5py.File(tmp, "w") as f,
            tqdm(total=sum(sizes.values()), desc=f"cpu_sim {out.name}", unit="file", disable=not progress) as bar,
        ):
            for name, size in sizes.items():
                dataset = f.create_dataset(name, shape=(size,), dtype=h5py.vlen_dtype(np.uint8))
                files = _distinct_files(rngs[name], min_program, max_program, seen, rejected)
                for lo in range(0, size, _WRITE_CHUNK):
                    chunk = np.empty(min(_WRITE_CHUNK, size - lo), dtype=dataset.dtype)
                    for i in range(len(chunk)):
                        chunk[i] = np.frombuffer(next(files), dtype=np.uint8)
                        bar.update(1)
                    # not dataset[...] = chunk: h5py stacks a chunk of equal-length files into 2-D and refuses it
                    dataset.write_direct(chunk, dest_sel=np.s_[lo : lo + len(chunk)])
            attrs = {
                "dataset": DATASET_TAG,
                "description": "bGPT CPU-state simulation files (sanderwood/bgpt @ 56b98d6 cpu-simulation.py)",
                "layout": "one vlen uint8 dataset per split; each element = 1024-byte memory image (program) + "
                "16-byte states [PC, ACC, IR0..IR3, R0..R9]: state 0 = initial, then one per executed instruction",
                "extension": EXTENSION,
                "memory_size": MEMORY_SIZE,
                "state_size": STATE_SIZE,
                "states_offset": STATES_OFFSET,
                "predict_offset": PREDICT_OFFSET,
                "split_names": np.asarray(list(sizes), dtype=h5py.string_dtype()),
                **{f"num_{name}": size for name, size in sizes.items()},
                "min_program": min_program,
                "max_program": max_program,
                "seed": seed,
                "seed_derivation": "random.Random(numpy SeedSequence(seed).spawn(number of splits)[i]"
                ".generate_state(1, uint64)[0]) for split i, in the order of split_names",
                "dedup": "every program (MD5 of its assembly, the official file name) at most once in the file; "
                "repeats are redrawn; splits are drawn in the order of split_names",
                "rejected_duplicates": rejected[0],
                "formers_bytes_version": _package_version(),
                "created_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "generated_seconds": time.perf_counter() - start,
            }
            for key, value in attrs.items():
                f.attrs[key] = value
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def read_split(path: str | os.PathLike[str], split: str) -> list[bytes]:
    """Every file of ``split`` of a dataset written by :func:`generate`, as ``bytes``, in stored order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such CPU-simulation dataset (generate it with `python -m formers.bytes.cpu_sim --out {path}`)"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from err
    with f:
        if f.attrs.get("dataset") != DATASET_TAG:
            raise ValueError(f"{path}: not a CPU-simulation dataset (no attribute dataset = {DATASET_TAG!r})")
        if split not in f or not isinstance(f[split], h5py.Dataset):
            available = sorted(k for k in f.keys() if isinstance(f[k], h5py.Dataset))
            raise KeyError(f"{path}: no split {split!r} (splits in the file: {available})")
        dataset = f[split]
        if h5py.check_vlen_dtype(dataset.dtype) != np.dtype(np.uint8):
            raise ValueError(f"{path}: split {split!r} is not a variable-length uint8 dataset ({dataset.dtype})")
        try:
            return [row.tobytes() for row in dataset[()]] if dataset.shape[0] else []
        except OSError as err:
            raise ValueError(f"{path}: split {split!r} could not be read, the file is corrupt ({err})") from err


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m formers.bytes.cpu_sim",
        description="Generate bGPT's CPU-state simulation dataset (one HDF5 file, one vlen uint8 dataset per split).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output HDF5 file")
    parser.add_argument("--train", type=int, default=2_100_000, help="training files (official: 2100000)")
    parser.add_argument("--val", type=int, default=0, help="validation files (the official script has none)")
    parser.add_argument("--test", type=int, default=21_000, help="test files (official: 21000)")
    parser.add_argument("--min-program", type=int, default=1, help="fewest instructions, HLT included")
    parser.add_argument("--max-program", type=int, default=255, help=f"most instructions (<= {MAX_PROGRAM})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    path = generate(
        args.out,
        {"train": args.train, "val": args.val, "test": args.test},
        min_program=args.min_program,
        max_program=args.max_program,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()

"""SMILES -> PyG graphs for the molecule datasets: MoleculeNet HIV and ESOL, and benchmarking-gnns' ZINC.

* **HIV / ESOL** (:data:`HIV`, :data:`ESOL`): PyG's ``from_smiles`` featurization (``x`` long ``(n, 9)``: the OGB-style
  atom columns of ``torch_geometric.utils.smiles.x_map``; ``edge_attr`` long ``(E, 3)``: ``e_map``'s bond columns;
  ``edge_index`` in both directions), ``y`` float ``(1, 1)``. Split: OGB/deepchem scaffold split
  (:func:`scaffold_split`, Bemis-Murcko scaffolds without chirality, 80/10/10).
* **ZINC** (:func:`zinc_graph`): benchmarking-gnns' layout, ``x`` long ``(n, 1)`` atom type, ``edge_attr`` long
  ``(E, 1)`` kekulized bond type 1/2/3 (SINGLE/DOUBLE/TRIPLE; 0 = no bond, so 4 bond types), ``y`` float ``(1, 1)``
  = the normalised penalised logP (:func:`normalized_penalized_logp`). An atom's type is its key in ZINC's atom
  dictionary (:func:`zinc_atom_keys`: ``'C'``, ``'C H1'``, ``'N H1 +'``, ``'O -'`` ...); the vocabulary is built from
  the data (:func:`zinc_vocabulary`) and stored with the prepared data.

  **The ZINC training set here is not the paper's.** The 10,000 training molecules of the ZINC 12k subset are rows of
  ZINC-full's *train* file, which is not available (SOURCES.md). :func:`zinc_split_rows` takes val and test exactly
  (``val.index`` rows of JT-VAE's ``valid.txt``, ``test.index`` rows of ``test.txt``) and trains on the other
  23,445 molecules of ``valid.txt``: same distribution and protocol, different molecules, so test MAEs are comparable
  in kind but not a reproduction of the published numbers.

Errors name the file and the 0-based data row (header excluded): :class:`MoleculeError` for a SMILES RDKit cannot
parse or a molecule without atoms, ``ValueError`` for a bad label or a missing column.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import networkx as nx
import torch
from rdkit import Chem, RDLogger
from rdkit.Chem import Crippen, rdmolops
from rdkit.Chem.Scaffolds import MurckoScaffold
from rdkit.Contrib.SA_Score import sascorer
from torch_geometric.data import Data
from torch_geometric.utils import from_rdmol
from torch_geometric.utils.smiles import e_map, x_map
from tqdm import tqdm

__all__ = [
    "ESOL",
    "HIV",
    "MOLECULE_DATASETS",
    "MoleculeCsv",
    "MoleculeError",
    "MoleculeTable",
    "ZINC_BOND_TYPES",
    "ZINC_NUM_ATOM_TYPES",
    "ZINC_NUM_BOND_TYPES",
    "ZINC_OFFICIAL_ATOM_TYPES",
    "featurize_smiles",
    "molecule_graph",
    "murcko_scaffold",
    "normalized_penalized_logp",
    "ogb_atom_bond_sizes",
    "parse_smiles",
    "penalized_logp_terms",
    "read_index_file",
    "read_molecule_csv",
    "read_smiles_lines",
    "scaffold_split",
    "zinc_atom_keys",
    "zinc_graph",
    "zinc_split_rows",
    "zinc_vocabulary",
]

TaskKind = Literal["graph_regression", "graph_binary", "node_classification"]


class MoleculeError(ValueError):
    """A SMILES that RDKit cannot parse, or a molecule without atoms (the message names the source and row)."""


# ------------------------------------------------------------------------------------------------ CSV datasets


@dataclass(frozen=True)
class MoleculeCsv:
    """Where a MoleculeNet CSV lives under the shared data folder and which columns hold what."""

    name: str
    path: str  # relative to the raw folder (``../shared/data/graph``)
    smiles_column: str
    target_column: str
    task: TaskKind
    #: 0-based data rows known to be unparsable by RDKit (skipped with one summary warning)
    known_unparsable: tuple[int, ...] = ()


HIV = MoleculeCsv(
    name="hiv",
    path="molhiv/HIV.csv",
    smiles_column="smiles",
    target_column="HIV_active",
    task="graph_binary",
    known_unparsable=(137, 987, 12882, 18293, 30784, 30785, 35728),  # Al/B/Ge complexes (SOURCES.md)
)
ESOL = MoleculeCsv(
    name="esol",
    path="esol/delaney-processed.csv",
    smiles_column="smiles",
    target_column="measured log solubility in mols per litre",
    task="graph_regression",
)
MOLECULE_DATASETS = {spec.name: spec for spec in (HIV, ESOL)}


def ogb_atom_bond_sizes() -> tuple[list[int], list[int]]:
    """Per-column vocabulary sizes of PyG's ``from_smiles`` features: ``(atom columns (9), bond columns (3))``."""
    return [len(values) for values in x_map.values()], [len(values) for values in e_map.values()]


def parse_smiles(smiles: str, *, source: str = "SMILES", row: int | None = None):
    """``Chem.MolFromSmiles(smiles)`` (as ``from_smiles`` parses it), or :class:`MoleculeError` naming ``source``,
    ``row`` and RDKit's reason when it fails or the molecule has no atoms."""
    RDLogger.DisableLog("rdApp.*")  # RDKit's reasons go into our messages instead of stderr (as from_smiles does)
    where = f"{source}, row {row}" if row is not None else source
    text = smiles.strip() if isinstance(smiles, str) else smiles
    if not isinstance(text, str) or not text:
        raise MoleculeError(f"{where}: empty SMILES: a graph needs at least one atom")
    mol = Chem.MolFromSmiles(text)
    if mol is None:
        raise MoleculeError(f"{where}: RDKit cannot parse the SMILES {text!r}: {_parse_failure(text)}")
    if mol.GetNumAtoms() == 0:
        raise MoleculeError(f"{where}: the SMILES {text!r} has no atoms (an empty graph)")
    return mol


def _parse_failure(smiles: str) -> str:
    """RDKit's reason for rejecting ``smiles`` (re-parsed without sanitization to get the sanitizer's message)."""
    raw = Chem.MolFromSmiles(smiles, sanitize=False)
    if raw is None:
        return "invalid SMILES syntax"
    try:
        Chem.SanitizeMol(raw)
    except Exception as err:  # RDKit raises its own exception classes (AtomValenceException, KekulizeException ...)
        return str(err).strip() or type(err).__name__
    return "rejected by RDKit"


def molecule_graph(mol: Any, smiles: str) -> Data:
    """PyG's ``from_smiles`` featurization of a parsed molecule: ``from_smiles`` is ``MolFromSmiles`` followed by
    ``from_rdmol``; the molecule is parsed once here (:func:`parse_smiles`) to report failures.

    Raises:
        ValueError: an atom or bond property outside PyG's feature tables (``x_map`` / ``e_map``).
    """
    try:
        data = from_rdmol(mol)
    except ValueError as err:  # list.index of a value outside x_map/e_map, e.g. a charge of +7
        raise ValueError(f"a property outside PyG's from_smiles feature tables ({err})") from err
    data.smiles = smiles.strip()
    return data


@dataclass
class MoleculeTable:
    """The parsed rows of a molecule CSV.

    Attributes:
        graphs: one PyG graph per kept row (``y`` float ``(1, 1)``).
        rows: the 0-based data row of each graph in the file.
        mols: the RDKit molecules (for scaffolds; not saved).
        skipped: ``{row: reason}`` of the rows left out (unparsable SMILES, no atoms).
    """

    graphs: list[Data]
    rows: list[int]
    mols: list[Any] = field(repr=False)
    skipped: dict[int, str]


def _read_csv_columns(path: Path, columns: Sequence[str], limit: int | None) -> list[list[str]]:
    """The named columns of every data row (``csv`` module: CRLF and a missing final line break are fine)."""
    if not path.is_file():
        raise ValueError(f"molecule CSV not found: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty: expected a header with columns {list(columns)}")
        missing = [name for name in columns if name not in header]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing} in the header {header}")
        positions = [header.index(name) for name in columns]
        rows = []
        for row, fields in enumerate(reader):
            if limit is not None and row >= limit:
                break
            if len(fields) != len(header):
                raise ValueError(f"{path}, row {row}: {len(fields)} fields where the header has {len(header)}")
            rows.append([fields[i] for i in positions])
    return rows


def _parse_target(text: str, task: TaskKind, source: Path, row: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if task == "graph_binary":
        if value not in (0.0, 1.0):
            raise ValueError(f"{source}, row {row}: column {column!r} must be 0 or 1, got {text!r}")
    elif not math.isfinite(value):
        raise ValueError(f"{source}, row {row}: column {column!r} must be a finite number, got {text!r}")
    return value


def read_molecule_csv(
    path: str | Path,
    spec: MoleculeCsv,
    *,
    limit: int | None = None,
    progress: bool = False,
) -> MoleculeTable:
    """Read a MoleculeNet CSV into PyG graphs (``from_smiles`` features, ``y`` float ``(1, 1)``).

    Rows whose SMILES RDKit cannot parse (or that have no atoms) are skipped with ONE warning that lists them (HIV
    has 7 such rows, :attr:`MoleculeCsv.known_unparsable`); a bad label raises.

    Args:
        path: the CSV file.
        spec: its columns and task (:data:`HIV`, :data:`ESOL`).
        limit: read only the first ``limit`` data rows.
        progress: show a progress bar.

    Raises:
        ValueError: missing file or column, a ragged row, a label that is not 0/1 (binary) or not a finite number,
            naming the file and the 0-based data row.
    """
    path = Path(path)
    table = MoleculeTable(graphs=[], rows=[], mols=[], skipped={})
    records = _read_csv_columns(path, (spec.smiles_column, spec.target_column), limit)
    for row, (smiles, target) in enumerate(tqdm(records, desc=f"{spec.name}: parse", disable=not progress)):
        value = _parse_target(target, spec.task, path, row, spec.target_column)
        try:
            mol = parse_smiles(smiles, source=str(path), row=row)
            graph = molecule_graph(mol, smiles)
        except MoleculeError as err:
            table.skipped[row] = str(err)
            continue
        except ValueError as err:  # a property outside PyG's feature tables
            table.skipped[row] = f"{path}, row {row}: {err}"
            continue
        graph.y = torch.tensor([[value]], dtype=torch.float32)
        table.graphs.append(graph)
        table.rows.append(row)
        table.mols.append(mol)
    if table.skipped:
        _warn_skipped(path, table.skipped, spec.known_unparsable)
    return table


def _warn_skipped(path: Path, skipped: Mapping[int, str], known: Iterable[int]) -> None:
    rows = sorted(skipped)
    unexpected = sorted(set(rows) - set(known))
    note = f"; rows not among the known ones: {unexpected}" if unexpected and known else ""
    warnings.warn(
        f"{path}: skipped {len(rows)} row(s) whose SMILES RDKit cannot parse or that have no atoms "
        f"(0-based data rows {rows}){note}. First reason: {skipped[rows[0]]}",
        UserWarning,
        stacklevel=3,
    )


# ------------------------------------------------------------------------------------------------ scaffold split


def murcko_scaffold(mol: Any) -> str:
    """The Bemis-Murcko scaffold SMILES of ``mol`` without chirality (``''`` for acyclic molecules)."""
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def scaffold_split(
    scaffolds: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, list[int]]:
    """OGB / deepchem scaffold split of items with the given scaffolds; returns positions into ``scaffolds``.

    Items are grouped by scaffold; the groups are ordered by ``(size, first position)`` descending (the reference
    ``sorted(..., key=lambda x: (len(x[1]), x[1][0]), reverse=True)``: biggest first, a tie goes to the group whose
    first item comes later) and filled greedily: a group goes to train while train stays within
    ``fractions[0] * n``, else to val while train + val stay within ``(fractions[0] + fractions[1]) * n``, else to
    test. Each split's positions are returned in ascending order.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    groups: dict[str, list[int]] = {}
    for position, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold, []).append(position)
    ordered = sorted(groups.values(), key=lambda members: (len(members), members[0]), reverse=True)
    train_cutoff = fractions[0] * len(scaffolds)
    val_cutoff = (fractions[0] + fractions[1]) * len(scaffolds)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for members in ordered:
        if len(train) + len(members) > train_cutoff:
            if len(train) + len(val) + len(members) > val_cutoff:
                test += members
            else:
                val += members
        else:
            train += members
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


# ------------------------------------------------------------------------------------------------ ZINC

ZINC_NUM_ATOM_TYPES = 28
ZINC_NUM_BOND_TYPES = 4  # 0 = none, 1/2/3 = single/double/triple (kekulized)
ZINC_BOND_TYPES = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3}
#: benchmarking-gnns' ZINC ``atom_dict`` (index order of the official pickles); the vocabulary here is built from the
#: data instead, and every key it holds must be one of these.
ZINC_OFFICIAL_ATOM_TYPES = (
    "C", "O", "N", "F", "C H1", "S", "Cl", "O -", "N H1 +", "Br", "N H3 +", "N H2 +", "N +", "N -", "S -", "I", "P",
    "O H1 +", "N H1 -", "O +", "S +", "P H1", "P H2", "C H2 -", "P +", "S H1 +", "C H1 -", "P H1 +",
)  # fmt: skip

# normalisation of the penalised logP (GCPN / JT-VAE statistics of ZINC-250k; SOURCES.md)
_LOGP_MEAN, _LOGP_STD = 2.4570953396190123, 1.434324401111988
_SAS_MEAN, _SAS_STD = -3.0525811293166134, 0.8335207024513095  # of -SAS
_CYCLE_MEAN, _CYCLE_STD = -0.0485696876403053, 0.2860212110245455  # of -cycle

# atom tokens of a kekulé SMILES: bracket atoms, then the organic subset (two-letter symbols first)
_ATOM_TOKEN = re.compile(r"\[[^\]]+\]|Br|Cl|[BCNOPSFI]|\*")


def _charge_suffix(charge: int) -> str:
    return "" if charge == 0 else " +" if charge == 1 else " -" if charge == -1 else f" {charge:+d}"


def zinc_atom_keys(mol: Any) -> list[str]:
    """ZINC's atom type key of every atom: element symbol, ``' H<n>'`` when the atom is written in brackets with
    ``n`` hydrogens, and ``' +'`` / ``' -'`` for its formal charge (``'C'``, ``'C H1'``, ``'N H1 +'``, ``'O -'``).

    "Written in brackets" is judged on the kekulé SMILES RDKit writes (its own rule for when a bracket is needed):
    a chiral ``[C@@H]`` is ``'C H1'`` and ``[NH3+]`` is ``'N H3 +'``, while the aromatic ``[nH]`` of pyrrole is the
    plain ``N`` of ``C1=CNC=C1``. This reproduces the dictionary of the official data (no uncharged ``'N H1'``):
    ZINC val + test give 20 keys, all among :data:`ZINC_OFFICIAL_ATOM_TYPES`.
    """
    kekule = Chem.Mol(mol)
    Chem.Kekulize(kekule, clearAromaticFlags=True)
    smiles = Chem.MolToSmiles(kekule, kekuleSmiles=True, canonical=False)
    order = list(kekule.GetPropsAsDict(includePrivate=True, includeComputed=True)["_smilesAtomOutputOrder"])
    tokens = _ATOM_TOKEN.findall(smiles)
    if len(tokens) != kekule.GetNumAtoms() or len(order) != len(tokens):
        raise ValueError(f"cannot match the atoms of {smiles!r} to their SMILES tokens ({len(tokens)} tokens)")
    keys = [""] * kekule.GetNumAtoms()
    for token, index in zip(tokens, order, strict=True):
        atom = kekule.GetAtomWithIdx(index)
        hydrogens = atom.GetTotalNumHs() if token.startswith("[") else 0
        keys[index] = (
            atom.GetSymbol() + (f" H{hydrogens}" if hydrogens else "") + _charge_suffix(atom.GetFormalCharge())
        )
    return keys


def zinc_vocabulary(key_lists: Iterable[Sequence[str]]) -> list[str]:
    """The atom type vocabulary of a set of molecules: keys sorted by frequency (descending), ties by name."""
    counts = Counter(key for keys in key_lists for key in keys)
    return sorted(counts, key=lambda key: (-counts[key], key))


def _zinc_bonds(mol: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Kekulized bonds in both directions: ``edge_index`` long ``(2, E)`` sorted as PyG's, ``edge_attr`` ``(E, 1)``."""
    kekule = Chem.Mol(mol)
    Chem.Kekulize(kekule, clearAromaticFlags=True)
    pairs, types = [], []
    for bond in kekule.GetBonds():
        name = str(bond.GetBondType())
        if name not in ZINC_BOND_TYPES:
            raise ValueError(f"bond type {name} is not one of ZINC's {sorted(ZINC_BOND_TYPES)}")
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        pairs += [(i, j), (j, i)]
        types += [ZINC_BOND_TYPES[name]] * 2
    edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t()
    edge_attr = torch.tensor(types, dtype=torch.long).reshape(-1, 1)
    if edge_index.numel():
        order = (edge_index[0] * kekule.GetNumAtoms() + edge_index[1]).argsort()
        edge_index, edge_attr = edge_index[:, order], edge_attr[order]
    return edge_index.contiguous(), edge_attr


def zinc_graph(mol: Any, smiles: str, vocabulary: Mapping[str, int], keys: Sequence[str] | None = None) -> Data:
    """benchmarking-gnns' ZINC graph of ``mol``: ``x`` long ``(n, 1)`` atom type ids from ``vocabulary``,
    ``edge_index`` ``(2, E)`` both directions, ``edge_attr`` long ``(E, 1)`` in {1, 2, 3}.

    Raises:
        ValueError: an atom type outside ``vocabulary`` or a bond that is not single/double/triple.
    """
    keys = zinc_atom_keys(mol) if keys is None else keys
    unknown = sorted({key for key in keys if key not in vocabulary})
    if unknown:
        raise ValueError(f"atom type(s) {unknown} are not in the ZINC vocabulary {list(vocabulary)}")
    x = torch.tensor([vocabulary[key] for key in keys], dtype=torch.long).reshape(-1, 1)
    edge_index, edge_attr = _zinc_bonds(mol)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, smiles=smiles.strip())


def _largest_cycle_basis_ring(mol: Any) -> int:
    """Size of the largest cycle in networkx's cycle basis of the heavy-atom graph (0 without rings), the ring term
    of the reference code (``nx.cycle_basis(nx.Graph(rdmolops.GetAdjacencyMatrix(mol)))``)."""
    cycles = nx.cycle_basis(nx.Graph(rdmolops.GetAdjacencyMatrix(mol)))
    return max((len(cycle) for cycle in cycles), default=0)


def penalized_logp_terms(mol: Any) -> tuple[float, float, int]:
    """``(logP, SAS, cycle)``: Crippen MolLogP, RDKit Contrib's synthetic accessibility score and
    ``max(0, largest cycle-basis ring - 6)``."""
    return Crippen.MolLogP(mol), sascorer.calculateScore(mol), max(0, _largest_cycle_basis_ring(mol) - 6)


def normalized_penalized_logp(mol: Any) -> float:
    """benchmarking-gnns' ZINC target ("logP_SA_cycle_normalized"): each of logP, -SAS and -cycle standardised with
    the ZINC-250k statistics of GCPN / JT-VAE, then summed."""
    logp, sas, cycle = penalized_logp_terms(mol)
    return (logp - _LOGP_MEAN) / _LOGP_STD + (-sas - _SAS_MEAN) / _SAS_STD + (-cycle - _CYCLE_MEAN) / _CYCLE_STD


def read_smiles_lines(path: str | Path, *, limit: int | None = None) -> list[str]:
    """One SMILES per line (JT-VAE's ``valid.txt`` / ``test.txt``); a blank line raises, naming its row."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"SMILES file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines = lines[:limit] if limit is not None else lines
    smiles = [line.strip() for line in lines]
    blank = [row for row, text in enumerate(smiles) if not text]
    if blank:
        raise ValueError(f"{path}, row {blank[0]}: empty line where a SMILES is expected ({len(blank)} such rows)")
    return smiles


def read_index_file(path: str | Path) -> list[int]:
    """The comma-separated indices of a benchmarking-gnns ``*.index`` file, in file order (CRLF line ends, several
    lines, blanks and trailing commas are tolerated; anything else that is not a non-negative integer raises)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"index file not found: {path}")
    indices = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        for item in line.split(","):
            item = item.strip()
            if not item:
                continue
            if not item.isdigit():
                raise ValueError(f"{path}, line {line_number}: {item!r} is not a non-negative integer index")
            indices.append(int(item))
    if len(set(indices)) != len(indices):
        repeated = sorted(index for index, count in Counter(indices).items() if count > 1)
        raise ValueError(f"{path}: indices {repeated[:10]} appear more than once")
    return indices


def zinc_split_rows(
    valid_smiles: Sequence[str],
    test_smiles: Sequence[str],
    val_index: Sequence[int],
    test_index: Sequence[int],
    *,
    canonical: Sequence[str] | None = None,
    canonical_test: Sequence[str] | None = None,
) -> dict[str, list[int]]:
    """Rows of the ZINC subset splits: ``val`` = ``valid_smiles[val_index]`` and ``test`` = ``test_smiles[test_index]``
    in index-file order; ``train`` = every other row of ``valid_smiles`` (ascending) whose SMILES equals no val or
    test molecule (NOT the paper's training set, which comes from ZINC-full train: see the module docstring).

    Args:
        canonical, canonical_test: canonical SMILES of the two files' rows, used for the equality test (default: the
            strings as given).

    Returns:
        ``{"train": rows of valid, "val": rows of valid, "test": rows of test, "dropped": train candidates equal to
        a val/test molecule}``.
    """
    for name, index, size in (("val", val_index, len(valid_smiles)), ("test", test_index, len(test_smiles))):
        outside = [i for i in index if not 0 <= i < size]
        if outside:
            raise ValueError(f"{name}.index has {len(outside)} indices outside the {size} rows, e.g. {outside[:5]}")
    canonical = list(valid_smiles if canonical is None else canonical)
    canonical_test = list(test_smiles if canonical_test is None else canonical_test)
    held_out = {canonical[i] for i in val_index} | {canonical_test[i] for i in test_index}
    chosen = set(val_index)
    train, dropped = [], []
    for row in range(len(valid_smiles)):
        if row in chosen:
            continue
        (dropped if canonical[row] in held_out else train).append(row)
    return {"train": train, "val": list(val_index), "test": list(test_index), "dropped": dropped}


# ------------------------------------------------------------------------------------------------ user SMILES


def featurize_smiles(
    smiles: Sequence[str],
    *,
    featurizer: Literal["from_smiles", "zinc"],
    zinc_vocabulary: Sequence[str] | None = None,
    source: str = "input",
) -> tuple[list[Data], list[int], dict[int, str]]:
    """Featurize user SMILES the way a prepared dataset was featurized; bad rows are reported, not raised.

    Args:
        smiles: one SMILES per row.
        featurizer: ``"from_smiles"`` (HIV/ESOL) or ``"zinc"`` (atom types from ``zinc_vocabulary``).
        zinc_vocabulary: the prepared data's ZINC atom types, in id order.
        source: what the rows come from (a file name), named in the messages.

    Returns:
        ``(graphs, rows, errors)``: the graphs of the good rows, their row numbers, and ``{row: message}`` for each
        bad row (unparsable SMILES, no atoms, an atom type or property the model has no embedding for).
    """
    if featurizer == "zinc" and zinc_vocabulary is None:
        raise ValueError("featurizer 'zinc' needs the prepared data's zinc_vocabulary")
    if featurizer not in ("from_smiles", "zinc"):
        raise ValueError(f"featurizer must be 'from_smiles' or 'zinc', got {featurizer!r}")
    ids = {key: i for i, key in enumerate(zinc_vocabulary or ())}
    graphs, rows, errors = [], [], {}
    for row, text in enumerate(smiles):
        try:
            mol = parse_smiles(text, source=source, row=row)
            try:
                graph = molecule_graph(mol, text) if featurizer == "from_smiles" else zinc_graph(mol, text, ids)
            except ValueError as err:
                raise MoleculeError(f"{source}, row {row}: {err}") from err
        except MoleculeError as err:
            errors[row] = str(err)
            continue
        graphs.append(graph)
        rows.append(row)
    return graphs, rows, errors

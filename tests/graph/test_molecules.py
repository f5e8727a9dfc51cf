"""SMILES -> graphs: PyG featurization, errors naming file and row, scaffold split, ZINC atom types, target and splits.

Real files come from ../shared/data/graph (tests skip without it); only small parts of them are read here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch_geometric.utils import from_smiles

from formers.graph import molecules as mol
from formers.graph.molecules import (
    ESOL,
    HIV,
    ZINC_OFFICIAL_ATOM_TYPES,
    MoleculeError,
    featurize_smiles,
    molecule_graph,
    murcko_scaffold,
    normalized_penalized_logp,
    parse_smiles,
    penalized_logp_terms,
    read_index_file,
    read_molecule_csv,
    read_smiles_lines,
    scaffold_split,
    zinc_atom_keys,
    zinc_graph,
    zinc_split_rows,
    zinc_vocabulary,
)

RAW = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "graph"

# SOURCES.md: the first 5 rows of the ZINC-250k CSV (= test.txt lines 1-5): logP, SAS, cycle, normalised target
ZINC_CHECK_ROWS = [
    ("CC(C)(C)c1ccc2occ(CC(=O)Nc3ccccc3F)c2c1", 5.0506, 2.0841, 0, 3.1399),
    ("C[C@@H]1CC(Nc2cncc(-c3nncn3C)c2)C[C@@H](C)C1", 3.1137, 3.4320, 0, 0.1724),
    ("N#Cc1ccc(-c2ccc(O[C@@H](C(=O)N3CCCC3)c3ccccc3)cc2)cc1", 4.9678, 2.4706, 0, 2.6184),
    ("CCOC(=O)[C@@H]1CCCN(C(=O)c2nc(-c3ccc(C)cc3)n3c2CCCCC3)C1", 4.0002, 2.8228, 1, -1.9748),
    ("N#CC1=C(SCC(=O)Nc2cccc(Cl)c2)N=C([O-])[C@H](C#N)C12CCCCC2", 3.6096, 4.0352, 0, -0.2056),
]


def need(relative: str) -> Path:
    path = RAW / relative
    if not path.is_file():
        pytest.skip(f"{path} not found (see ../shared/data/graph/SOURCES.md)")
    return path


# ------------------------------------------------------------------------------------------------ featurization


@pytest.mark.parametrize("smiles", ["CCO", "c1ccccc1O", "C[C@@H](N)C(=O)[O-]", "[Na+].[Cl-]", "C/C=C/C"])
def test_molecule_graph_is_pyg_from_smiles(smiles):
    ours, pyg = molecule_graph(parse_smiles(smiles), smiles), from_smiles(smiles)
    for key in ("x", "edge_index", "edge_attr"):
        assert torch.equal(ours[key], pyg[key]), key
    assert ours.x.dtype == ours.edge_attr.dtype == torch.long
    assert ours.x.shape[1] == 9 and ours.edge_attr.shape[1] == 3 and ours.smiles == smiles


def test_vocabulary_sizes_are_pyg_feature_tables():
    atoms, bonds = mol.ogb_atom_bond_sizes()
    assert atoms == [119, 9, 11, 12, 9, 5, 8, 2, 2] and bonds == [22, 6, 2]


def test_parse_errors_name_source_row_and_reason():
    with pytest.raises(MoleculeError, match=r"data\.csv, row 3: RDKit cannot parse the SMILES 'C1CC': invalid SMILES"):
        parse_smiles("C1CC", source="data.csv", row=3)
    with pytest.raises(MoleculeError, match=r"row 4: .*Explicit valence"):
        parse_smiles("[B](C)(C)(C)(C)C", source="data.csv", row=4)
    with pytest.raises(MoleculeError, match=r"row 5: empty SMILES"):
        parse_smiles("  ", source="data.csv", row=5)


def test_featurize_smiles_reports_each_bad_row_and_keeps_the_rest():
    graphs, rows, errors = featurize_smiles(["CCO", "C1CC", "", "c1ccccc1"], featurizer="from_smiles", source="in.txt")
    assert rows == [0, 3] and [g.smiles for g in graphs] == ["CCO", "c1ccccc1"]
    assert sorted(errors) == [1, 2] and errors[1].startswith("in.txt, row 1:") and "row 2" in errors[2]
    _, _, errors = featurize_smiles(["[C+7]"], featurizer="from_smiles", source="in.txt")
    assert errors[0].startswith("in.txt, row 0: a property outside PyG's from_smiles feature tables")
    vocab = ["C", "O", "N"]
    graphs, rows, errors = featurize_smiles(["CCO", "CCS"], featurizer="zinc", zinc_vocabulary=vocab, source="in")
    assert rows == [0] and graphs[0].x.view(-1).tolist() == [0, 0, 1]
    assert "['S'] are not in the ZINC vocabulary" in errors[1]


# ------------------------------------------------------------------------------------------------ CSV datasets


def test_read_csv_rejects_bad_labels_and_columns(tmp_path):
    path = tmp_path / "hiv.csv"
    path.write_text("smiles,activity,HIV_active\r\nCCO,CI,0\r\nCCN,CM,2")  # CRLF, no final line break
    with pytest.raises(ValueError, match=r"hiv\.csv, row 1: column 'HIV_active' must be 0 or 1, got '2'"):
        read_molecule_csv(path, HIV)
    path.write_text("smiles,value\nCCO,1\n")
    with pytest.raises(ValueError, match=r"no column\(s\) \['HIV_active'\]"):
        read_molecule_csv(path, HIV)
    path.write_text("Compound ID,measured log solubility in mols per litre,smiles\na,nan,CCO\n")
    with pytest.raises(ValueError, match="row 0: column 'measured log solubility in mols per litre' must be a finite"):
        read_molecule_csv(path, ESOL)
    with pytest.raises(ValueError, match="molecule CSV not found"):
        read_molecule_csv(tmp_path / "missing.csv", ESOL)


def test_hiv_first_rows_skip_the_known_unparsable_row_with_one_warning():
    path = need(HIV.path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_molecule_csv(path, HIV, limit=300)
    assert len(caught) == 1 and "rows [137]" in str(caught[0].message) and str(path) in str(caught[0].message)
    assert list(table.skipped) == [137] and len(table.graphs) == 299 and 137 not in table.rows
    labels = torch.cat([g.y for g in table.graphs])
    assert labels.shape == (299, 1) and labels.dtype == torch.float32 and set(labels.view(-1).tolist()) <= {0.0, 1.0}
    # the HIV split logic on these rows: disjoint, complete, 80/10/10, no scaffold in two splits
    scaffolds = [murcko_scaffold(m) for m in table.mols]
    split = scaffold_split(scaffolds)
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(299))
    assert len(split["train"]) <= 0.8 * 299 and len(split["train"]) + len(split["val"]) <= 0.9 * 299
    owner = {scaffolds[i]: name for name, positions in split.items() for i in positions}
    assert all(owner[scaffolds[i]] == name for name, positions in split.items() for i in positions)


def test_esol_all_rows_and_scaffold_split_sizes():
    table = read_molecule_csv(need(ESOL.path), ESOL)
    assert len(table.graphs) == 1128 and not table.skipped
    values = torch.cat([g.y for g in table.graphs]).view(-1)
    assert values.min().item() == pytest.approx(-11.6) and values.max().item() == pytest.approx(1.58)
    assert values.mean().item() == pytest.approx(-3.050, abs=1e-3)
    split = scaffold_split([murcko_scaffold(m) for m in table.mols])
    assert [len(split[s]) for s in ("train", "val", "test")] == [902, 113, 113]  # deepchem's ESOL scaffold split


def test_scaffold_split_orders_sets_by_size_then_later_first_index():
    scaffolds = ["a", "b", "a", "c", "c", "c", "d", "e", "f", "g"]
    # sets: c(3) a(2), then the singletons by first index descending: g f e d b; cut-offs 6 and 8 items
    assert scaffold_split(scaffolds, (0.6, 0.2, 0.2)) == {"train": [0, 2, 3, 4, 5, 9], "val": [7, 8], "test": [1, 6]}
    with pytest.raises(ValueError, match="summing to 1"):
        scaffold_split(scaffolds, (0.5, 0.2, 0.2))


def test_murcko_scaffold_ignores_chirality():
    assert murcko_scaffold(parse_smiles("C[C@H]1CCCCC1c1ccccc1")) == murcko_scaffold(parse_smiles("CC1CCCCC1c1ccccc1"))
    assert murcko_scaffold(parse_smiles("CCO")) == ""


# ------------------------------------------------------------------------------------------------ ZINC


@pytest.mark.parametrize(("smiles", "logp", "sas", "cycle", "target"), ZINC_CHECK_ROWS)
def test_zinc_target_matches_the_reference_rows(smiles, logp, sas, cycle, target):
    molecule = parse_smiles(smiles)
    got_logp, got_sas, got_cycle = penalized_logp_terms(molecule)
    assert round(got_logp, 4) == logp and round(got_sas, 4) == sas and got_cycle == cycle
    assert round(normalized_penalized_logp(molecule), 4) == target


def test_zinc_check_rows_are_the_first_test_lines():
    lines = read_smiles_lines(need("zinc_jtvae/test.txt"), limit=5)
    assert lines == [row[0] for row in ZINC_CHECK_ROWS]


@pytest.mark.parametrize(
    ("smiles", "keys"),
    [
        ("C[C@@H](O)CC", ["C", "C H1", "O", "C", "C"]),  # stereocentre: a bracket atom with its H
        ("C[C@@H](O)C", ["C", "C", "O", "C"]),  # not a stereocentre: RDKit drops the tag, a plain C
        ("C[NH3+]", ["C", "N H3 +"]),
        ("CC(=O)[O-]", ["C", "C", "O", "O -"]),
        ("c1cc[nH]c1", ["C", "C", "C", "N", "C"]),  # aromatic [nH] is a plain N in kekule form (no 'N H1' type)
        ("C[n+]1ccccc1", ["C", "N +", "C", "C", "C", "C", "C"]),
        ("c1cc[nH+]cc1", ["C", "C", "C", "N H1 +", "C", "C"]),
        ("ClCBr", ["Cl", "C", "Br"]),
    ],
)
def test_zinc_atom_keys(smiles, keys):
    assert zinc_atom_keys(parse_smiles(smiles)) == keys


def test_zinc_graph_layout():
    smiles = "c1ccccc1C#N"
    vocab = {"C": 0, "N": 1}
    graph = zinc_graph(parse_smiles(smiles), smiles, vocab)
    assert graph.x.shape == (8, 1) and graph.x.dtype == torch.long and graph.x.view(-1).tolist() == [0] * 7 + [1]
    assert graph.edge_attr.shape == (16, 1) and graph.edge_attr.dtype == torch.long
    assert sorted(graph.edge_attr.view(-1).tolist()) == [1] * 8 + [2] * 6 + [3] * 2  # kekulized ring, one triple
    pairs = set(map(tuple, graph.edge_index.t().tolist()))
    assert all((j, i) in pairs for i, j in pairs)
    with pytest.raises(ValueError, match=r"\['O'\] are not in the ZINC vocabulary"):
        zinc_graph(parse_smiles("CO"), "CO", vocab)


def test_zinc_vocabulary_by_frequency_then_name():
    assert zinc_vocabulary([["C", "N", "O"], ["C", "O", "B"]]) == ["C", "O", "B", "N"]


def test_zinc_types_of_the_first_val_and_test_molecules_are_official():
    molecules = read_smiles_lines(need("zinc_jtvae/valid.txt"), limit=1500) + read_smiles_lines(
        need("zinc_jtvae/test.txt"), limit=1500
    )
    vocab = zinc_vocabulary(zinc_atom_keys(parse_smiles(s)) for s in molecules)
    assert set(vocab) <= set(ZINC_OFFICIAL_ATOM_TYPES) and vocab[:3] == ["C", "N", "O"]


@pytest.mark.slow
def test_zinc_val_and_test_give_20_official_types():
    molecules = read_smiles_lines(need("zinc_jtvae/valid.txt")) + read_smiles_lines(need("zinc_jtvae/test.txt"))
    vocab = zinc_vocabulary(zinc_atom_keys(parse_smiles(s)) for s in molecules)
    assert len(vocab) == 20 and set(vocab) <= set(ZINC_OFFICIAL_ATOM_TYPES)


def test_read_index_file_tolerates_crlf_and_trailing_commas(tmp_path):
    path = tmp_path / "val.index"
    path.write_bytes(b"3,1,2,\r\n5,\r\n\r\n")
    assert read_index_file(path) == [3, 1, 2, 5]
    path.write_text("1,x,2")
    with pytest.raises(ValueError, match=r"'x' is not a non-negative integer"):
        read_index_file(path)
    path.write_text("1,2,1")
    with pytest.raises(ValueError, match=r"indices \[1\] appear more than once"):
        read_index_file(path)


def test_zinc_split_rows_logic():
    valid = ["A", "B", "C", "D", "E"]
    test = ["X", "Y", "B"]
    rows = zinc_split_rows(valid, test, val_index=[3, 0], test_index=[1, 2])
    assert rows == {"train": [2, 4], "val": [3, 0], "test": [1, 2], "dropped": [1]}  # "B" is also a test molecule
    with pytest.raises(ValueError, match="val.index has 1 indices outside the 5 rows"):
        zinc_split_rows(valid, test, val_index=[7], test_index=[])


def test_zinc_split_rows_on_the_real_index_files():
    valid = read_smiles_lines(need("zinc_jtvae/valid.txt"))
    test = read_smiles_lines(need("zinc_jtvae/test.txt"))
    val_index = read_index_file(need("zinc_subset_index/val.index"))
    test_index = read_index_file(need("zinc_subset_index/test.index"))
    rows = zinc_split_rows(valid, test, val_index, test_index)
    assert (len(rows["train"]), len(rows["val"]), len(rows["test"])) == (23_445, 1_000, 1_000)
    assert not set(rows["train"]) & set(rows["val"]) and rows["dropped"] == []
    assert rows["test"][:3] == [912, 204, 2253]  # index-file order, as PyG's ZINC(subset=True)

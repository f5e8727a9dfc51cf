"""Preparation (graphs + encodings once, files, meta) and the data module that reads the result."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch_geometric.data import InMemoryDataset

from formers.core.runsafety import OutputOverwriteError
from formers.graph import molecules, prepare
from formers.graph.data import GraphDataModule, PreparedGraphs, featurize_smiles_like, read_meta
from formers.graph.prepare import ENCODINGS, main, save_split

RAW = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "graph"


def need_raw(*relative: str) -> Path:
    for name in relative:
        if not (RAW / name).is_file():
            pytest.skip(f"{RAW / name} not found (see ../shared/data/graph/SOURCES.md)")
    return RAW


def spd_available() -> bool:
    try:
        prepare.make_encoders(2, ["spd"])
    except ValueError:
        return False
    return True


ALL = list(ENCODINGS) if spd_available() else ["lap", "rwse"]


@pytest.fixture(scope="module")
def esol(tmp_path_factory):
    """ESOL, all 1,128 molecules, every available encoding."""
    raw = need_raw(molecules.ESOL.path)
    out = tmp_path_factory.mktemp("prepared") / "esol"
    meta = prepare.prepare("esol", out, raw, encodings=ALL)
    return out, meta


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "pattern"
    meta = prepare.prepare("pattern", out, sizes=(30, 6, 6), seed=1, encodings=ALL)
    return out, meta


def test_files_meta_and_split_record(esol):
    out, meta = esol
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".formers-generated", "meta.json", "split.json", "train.pt", "val.pt", "test.pt"]
    )
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == json.loads(json.dumps(meta)) and read_meta(out) == on_disk
    assert meta["dataset"] == "esol" and meta["task"] == "graph_regression" and meta["out_dim"] == 1
    assert meta["num_atom_types"] == [119, 9, 11, 12, 9, 5, 8, 2, 2] and meta["num_bond_types"] == [22, 6, 2]
    assert meta["pe_dim"] == 8 and list(meta["encodings"]) == ALL and meta["rwse_walk_length"] == 20
    assert meta["split_sizes"] == {"train": 902, "val": 113, "test": 113}
    source = meta["sources"]["esol/delaney-processed.csv"]
    assert source["sha256"] == "8c06a76f0c6487d29ab0f903e6a7a7139f189ab3c1178f159c8be8964602f189"
    assert meta["versions"]["formers-graph"] and meta["timings"]["build_s"] >= 0
    split = json.loads((out / "split.json").read_text())
    rows = split["train"] + split["val"] + split["test"]
    assert sorted(rows) == list(range(1128)) and [len(split[s]) for s in ("train", "val", "test")] == [902, 113, 113]
    # the .pt files follow split.json's order: graph i of val is CSV row split["val"][i]
    table = molecules.read_molecule_csv(RAW / molecules.ESOL.path, molecules.ESOL, limit=max(split["val"][:3]) + 1)
    smiles = {row: graph.smiles for row, graph in zip(table.rows, table.graphs, strict=True)}
    val = PreparedGraphs(out / "val.pt")
    assert [val[i].smiles for i in range(3)] == [smiles[row] for row in split["val"][:3]]


def test_split_files_load_with_weights_only(esol):
    out, _ = esol
    code = (
        "import sys, torch; data, slices = torch.load(sys.argv[1], weights_only=True); "
        "assert 'torch_geometric' not in sys.modules; print(sorted(data), data['x'].dtype)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(out / "train.pt")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # plain types: no PyG import needed to open the file
    assert "torch.uint8" in done.stdout and "'lap_pe'" in done.stdout  # compacted on disk ...
    dataset = InMemoryDataset()
    dataset.load(str(out / "train.pt"))  # PyG's own reader takes the file as well
    assert dataset.len() == 902
    graph = PreparedGraphs(out / "train.pt")[0]
    assert graph.x.dtype == graph.edge_index.dtype == graph.edge_attr.dtype == torch.long  # ... int64 again


def test_data_module_batches_and_sizes(esol):
    out, meta = esol
    dm = GraphDataModule(str(out), batch_size=16)
    assert dm.model_sizes() == {
        "num_atom_types": meta["num_atom_types"],
        "num_bond_types": meta["num_bond_types"],
        "out_dim": 1,
    }
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 16 and batch.y.shape == (16, 1) and batch.y.dtype == torch.float32
    assert batch.x.shape[1] == 9 and batch.edge_attr.shape[1] == 3 and batch.edge_index.dtype == torch.long
    assert batch.lap_pe.shape == (batch.num_nodes, 8) and batch.rwse.shape == (batch.num_nodes, 20)
    if "spd" in ALL:
        sizes = batch.ptr.diff()
        assert batch.spd.shape == (int((sizes**2).sum()),)
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [902, 113, 113]


def test_predict_featurizes_like_the_prepared_data(esol):
    out, _ = esol
    dm = GraphDataModule(str(out))
    state = dm.state_dict()
    assert json.loads(json.dumps(state)) == state  # plain types only
    prepared = dm.dataset("test")[0]
    graphs, rows, errors = GraphDataModule.featurize([prepared.smiles, "C1CC"], state, source="user.smi")
    assert rows == [0] and list(errors) == [1] and "user.smi, row 1" in errors[1]
    for key in ["x", "edge_index", "edge_attr", "lap_pe", "rwse"] + (["spd", "spd_next"] if "spd" in ALL else []):
        assert torch.equal(graphs[0][key], prepared[key]), key
    with pytest.raises(ValueError, match="takes graphs, not SMILES"):
        featurize_smiles_like(["C"], {"dataset": "pattern", "featurizer": "sbm"})


def test_resume_refuses_other_data(esol):
    out, _ = esol
    dm = GraphDataModule(str(out))
    dm.load_state_dict(dm.state_dict())
    other = dm.state_dict()
    other["meta"] = {**other["meta"], "pe_dim": 4}
    with pytest.raises(ValueError, match="trained on data with pe_dim=4"):
        dm.load_state_dict(other)


def test_missing_folder_names_the_command(tmp_path):
    with pytest.raises(ValueError, match=r"python -m formers\.graph\.prepare zinc --raw \.\./shared/data/graph --out"):
        GraphDataModule(str(tmp_path / "zinc"))
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match="has no meta.json"):
        GraphDataModule(str(tmp_path / "half"))


def test_out_folder_safety(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputOverwriteError, match="was not made by formers.graph.prepare"):
        prepare.prepare("cluster", foreign, sizes=(3, 2, 2), encodings=[])
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit) as exit_info:
        main(["cluster", "--out", str(foreign), "--sizes", "3", "2", "2", "--no-encodings", "--quiet"])
    assert exit_info.value.code == 1 and "refusing to replace" in capsys.readouterr().err
    ours = tmp_path / "ours"
    main(["cluster", "--out", str(ours), "--sizes", "3", "2", "2", "--no-encodings", "--quiet", "--seed", "4"])
    main(["cluster", "--out", str(ours), "--sizes", "4", "2", "2", "--no-encodings", "--quiet"])  # replaces its own
    assert read_meta(ours)["split_sizes"]["train"] == 4 and read_meta(ours)["encodings"] == {}
    assert read_meta(ours)["pe_dim"] is None and "pe_dim" not in GraphDataModule(str(ours)).model_sizes()


def test_pattern_node_task_round_trip(pattern):
    out, meta = pattern
    assert meta["task"] == "node_classification" and meta["num_classes"] == 2 and meta["num_atom_types"] == 3
    assert meta["num_bond_types"] is None and meta["pe_dim"] == 2
    assert meta["generator_params"]["q"] == 0.35 and meta["generator_params"]["seed"] == 1
    dm = GraphDataModule(str(out), batch_size=4)
    assert dm.model_sizes() == {"num_atom_types": 3, "num_bond_types": None, "num_classes": 2}
    batch = next(iter(dm.val_dataloader()))
    assert batch.y.shape == (batch.num_nodes,) and batch.y.dtype == torch.long and batch.x.shape == (batch.num_nodes, 1)
    assert batch.edge_index.dtype == torch.long and "edge_attr" not in batch
    # what was saved is what the generator made (the compact on-disk dtypes are lossless)
    from formers.graph.sbm import pattern_splits

    generated = pattern_splits((30, 6, 6), seed=1)["test"][5].to_data()
    loaded = dm.dataset("test")[5]
    for key in ("x", "y", "edge_index"):
        assert torch.equal(loaded[key], generated[key]), key
    split = json.loads((out / "split.json").read_text())
    assert split["pattern_instance"]["train"][:3] == [0, 3, 6] and split["sizes"] == {"train": 30, "val": 6, "test": 6}


def test_hiv_first_rows(tmp_path):
    raw = need_raw(molecules.HIV.path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = prepare.prepare("hiv", tmp_path / "hiv", raw, limit=300, encodings=[])
    assert sum("skipped 1 row(s)" in str(w.message) for w in caught) == 1
    assert meta["task"] == "graph_binary" and list(meta["skipped_rows"]) == ["137"] and meta["limit"] == 300
    split = json.loads((tmp_path / "hiv" / "split.json").read_text())
    assert split["skipped"] == [137] and 137 not in split["train"] + split["val"] + split["test"]
    assert sum(meta["split_sizes"].values()) == 299


def test_zinc_first_rows(tmp_path):
    raw = need_raw(*prepare._ZINC_FILES.values())
    meta = prepare.prepare("zinc", tmp_path / "zinc", raw, limit=300, encodings=["lap"])
    assert meta["num_atom_types"] == 28 and meta["num_bond_types"] == 4 and meta["featurizer"] == "zinc"
    vocab = meta["vocabularies"]["atom_types"]
    assert vocab[0] == "C" and set(vocab) <= set(molecules.ZINC_OFFICIAL_ATOM_TYPES)
    counts = list(meta["vocabularies"]["atom_type_counts"].values())
    assert counts == sorted(counts, reverse=True)
    split = json.loads((tmp_path / "zinc" / "split.json").read_text())
    test_index = [i for i in molecules.read_index_file(raw / "zinc_subset_index/test.index") if i < 300]
    assert split["test"]["source"] == "zinc_jtvae/test.txt" and split["test"]["rows"] == test_index  # index order
    assert test_index[0] == 204
    graph = PreparedGraphs(tmp_path / "zinc" / "test.pt")[0]
    lines = molecules.read_smiles_lines(raw / "zinc_jtvae/test.txt", limit=300)
    assert graph.smiles == lines[204]
    assert graph.y.item() == pytest.approx(molecules.normalized_penalized_logp(molecules.parse_smiles(lines[204])))
    assert (
        graph.x.shape[1] == 1
        and int(graph.x.max()) < len(vocab)
        and set(graph.edge_attr.view(-1).tolist()) <= {1, 2, 3}
    )
    assert graph.lap_pe.shape == (graph.num_nodes, 8)


def test_save_split_keeps_one_graph_and_refuses_none(tmp_path):
    graph = molecules.molecule_graph(molecules.parse_smiles("CCO"), "CCO")
    save_split([graph], tmp_path / "one.pt")
    assert len(PreparedGraphs(tmp_path / "one.pt", widen=["x"])) == 1
    with pytest.raises(ValueError, match="empty split"):
        save_split([], tmp_path / "none.pt")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        prepare.prepare("qm9", tmp_path / "x")
    with pytest.raises(ValueError, match="use --sizes instead of --limit"):
        prepare.prepare("pattern", tmp_path / "x", limit=3, encodings=[])
    with pytest.raises(ValueError, match="lacks"):
        prepare.prepare("esol", tmp_path / "x", tmp_path, encodings=[])
    with pytest.raises(ValueError, match="unknown encoding"):
        prepare.make_encoders(2, ["lap", "bogus"])
    with pytest.raises(SystemExit):
        main(["esol", "--encodings", "lap,bogus"])

"""Behavioural tests for the synthetic TwHIN graph generator."""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tml.projects.twhin.tools.synthetic import RELATIONS, TABLES, OutputExistsError, generate
from tml.projects.twhin.tools.synthetic import generator as synthetic_generator

REPO_ROOT = Path(__file__).resolve().parents[2]

# Small enough to run in well under a second, big enough for stable statistics.
SMALL: dict[str, Any] = dict(
    num_users=600,
    num_tweets=1000,
    num_advertisers=60,
    num_edges=30000,
    num_communities=10,
    in_community=0.9,
    validation_fraction=0.05,
    rows_per_file=8000,
    row_group_size=3000,
)


def _read_split(out: Path, split: str) -> pa.Table:
    files = sorted(glob.glob(str(out / split / "part-*.parquet")))
    assert files, f"no parquet files in {split}"
    return pa.concat_tables([pq.read_table(f) for f in files])


def _communities(out: Path) -> dict[str, np.ndarray]:
    t = pq.read_table(out / "communities.parquet")
    names = np.asarray(t["table"].to_pylist())
    ids = t["id"].to_numpy()
    comm = t["community"].to_numpy()
    result = {}
    for table in TABLES:
        m = names == table
        order = np.argsort(ids[m])
        result[table] = comm[m][order]
    return result


def _all_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("graph") / "out"
    graph = generate(str(out), seed=7, **SMALL)
    return out, graph


@pytest.fixture(scope="module")
def train_edges(small_graph: tuple[Path, dict[str, Any]]) -> dict[str, np.ndarray]:
    t = _read_split(small_graph[0], "train")
    return {c: t[c].to_numpy() for c in ("lhs", "rel", "rhs")}


def test_writes_expected_files_and_int64_edge_schema(small_graph) -> None:
    out, graph = small_graph
    assert (out / "graph.json").is_file()
    assert (out / "communities.parquet").is_file()
    n_train = graph["num_train_edges"]
    train_files = sorted((out / "train").glob("part-*.parquet"))
    assert [p.name for p in train_files] == [
        f"part-{i:05d}.parquet" for i in range(math.ceil(n_train / SMALL["rows_per_file"]))
    ]
    assert (out / "validation" / "part-00000.parquet").is_file()
    for f in train_files + sorted((out / "validation").glob("*.parquet")):
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        assert schema.names == ["lhs", "rel", "rhs"]
        assert all(schema.field(c).type == pa.int64() for c in schema.names)
        assert pf.metadata.num_rows <= SMALL["rows_per_file"]
        for i in range(pf.metadata.num_row_groups):
            assert pf.metadata.row_group(i).num_rows <= SMALL["row_group_size"]
    # All but the last file are full.
    assert all(
        pq.ParquetFile(f).metadata.num_rows == SMALL["rows_per_file"] for f in train_files[:-1]
    )


def test_communities_file_has_one_row_per_entity(small_graph) -> None:
    out, _ = small_graph
    t = pq.read_table(out / "communities.parquet")
    assert t.schema.names == ["table", "id", "community"]
    assert t.schema.field("table").type == pa.string()
    assert t.schema.field("id").type == pa.int64()
    assert t.schema.field("community").type == pa.int64()
    comm = _communities(out)
    sizes = {
        "user": SMALL["num_users"],
        "tweet": SMALL["num_tweets"],
        "advertiser": SMALL["num_advertisers"],
    }
    assert t.num_rows == sum(sizes.values())
    for table, n in sizes.items():
        assert len(comm[table]) == n
        assert comm[table].min() >= 0 and comm[table].max() < SMALL["num_communities"]


def test_communities_are_not_contiguous_in_id_order(small_graph) -> None:
    comm = _communities(small_graph[0])["user"]
    # Contiguous blocks would change community about num_communities times.
    changes = int((np.diff(comm) != 0).sum())
    assert changes > len(comm) / 2


def test_graph_json_describes_tables_relations_and_counts(small_graph) -> None:
    out, graph = small_graph
    on_disk = json.loads((out / "graph.json").read_text())
    assert on_disk == graph
    assert graph["tables"] == {"user": 600, "tweet": 1000, "advertiser": 60}
    assert list(graph["tables"]) == list(TABLES)
    assert graph["relations"] == [{"name": n, "lhs": lt, "rhs": rt} for n, lt, rt in RELATIONS]
    assert graph["seed"] == 7
    assert graph["num_communities"] == SMALL["num_communities"]
    assert graph["num_train_edges"] == _read_split(out, "train").num_rows
    assert graph["num_validation_edges"] == _read_split(out, "validation").num_rows


def test_same_seed_gives_byte_identical_output(tmp_path: Path) -> None:
    params = dict(SMALL, num_edges=5000, rows_per_file=2000)
    generate(str(tmp_path / "a"), seed=3, **params)
    generate(str(tmp_path / "b"), seed=3, **params)
    a, b = _all_bytes(tmp_path / "a"), _all_bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a == b


def test_different_seed_gives_different_graph(tmp_path: Path) -> None:
    params = dict(SMALL, num_edges=5000, rows_per_file=2000)
    generate(str(tmp_path / "a"), seed=3, **params)
    generate(str(tmp_path / "b"), seed=4, **params)
    ta, tb = _read_split(tmp_path / "a", "train"), _read_split(tmp_path / "b", "train")
    assert not ta.equals(tb)
    ca = pq.read_table(tmp_path / "a" / "communities.parquet")
    cb = pq.read_table(tmp_path / "b" / "communities.parquet")
    assert not ca.equals(cb)


def test_relation_values_and_ids_are_in_range(small_graph, train_edges) -> None:
    _, graph = small_graph
    rel, lhs, rhs = train_edges["rel"], train_edges["lhs"], train_edges["rhs"]
    assert rel.min() >= 0 and rel.max() < len(RELATIONS)
    for r, (_, lhs_table, rhs_table) in enumerate(RELATIONS):
        m = rel == r
        assert m.any(), f"relation {r} never generated"
        assert lhs[m].min() >= 0 and lhs[m].max() < graph["tables"][lhs_table]
        assert rhs[m].min() >= 0 and rhs[m].max() < graph["tables"][rhs_table]


def test_relation_mix_is_respected(train_edges) -> None:
    freq = np.bincount(train_edges["rel"], minlength=4) / len(train_edges["rel"])
    np.testing.assert_allclose(freq, [0.4, 0.3, 0.2, 0.1], atol=0.02)


def test_follows_has_no_self_loops(train_edges) -> None:
    m = train_edges["rel"] == 0
    assert not np.any(train_edges["lhs"][m] == train_edges["rhs"][m])


def test_most_edges_stay_within_lhs_community(small_graph, train_edges) -> None:
    comm = _communities(small_graph[0])
    rel, lhs, rhs = train_edges["rel"], train_edges["lhs"], train_edges["rhs"]
    same = np.zeros(len(rel), dtype=bool)
    for r, (_, lhs_table, rhs_table) in enumerate(RELATIONS):
        m = rel == r
        same[m] = comm[lhs_table][lhs[m]] == comm[rhs_table][rhs[m]]
    frac = same.mean()
    # Cross-community draws land in the same community by chance a little of the time.
    assert SMALL["in_community"] - 0.02 <= frac <= SMALL["in_community"] + 0.08
    assert frac > 5 / SMALL["num_communities"]


def test_rhs_degrees_are_heavily_skewed(small_graph, train_edges) -> None:
    _, graph = small_graph
    rel, rhs = train_edges["rel"], train_edges["rhs"]
    for r, (name, _, rhs_table) in enumerate(RELATIONS):
        m = rel == r
        counts = np.sort(np.bincount(rhs[m], minlength=graph["tables"][rhs_table]))[::-1]
        top = max(1, len(counts) // 100)
        share = counts[:top].sum() / m.sum()
        assert share > 0.1, f"{name}: top 1% of rhs ids get only {share:.3f} of edges"


def test_edges_are_shuffled_not_sorted(train_edges) -> None:
    assert np.any(np.diff(train_edges["rel"]) < 0)
    assert np.any(np.diff(train_edges["lhs"]) < 0)


def test_validation_split_size_and_disjoint_row_counts(small_graph) -> None:
    out, graph = small_graph
    n_val = _read_split(out, "validation").num_rows
    n_train = _read_split(out, "train").num_rows
    assert n_val == round(SMALL["validation_fraction"] * SMALL["num_edges"])
    assert n_train + n_val == SMALL["num_edges"]
    assert (n_train, n_val) == (graph["num_train_edges"], graph["num_validation_edges"])


def test_tiny_validation_fraction_still_holds_out_one_edge(tmp_path: Path) -> None:
    graph = generate(str(tmp_path / "g"), **dict(SMALL, num_edges=500, validation_fraction=0.0))
    assert graph["num_validation_edges"] == 1
    assert graph["num_train_edges"] == 499
    assert _read_split(tmp_path / "g", "validation").num_rows == 1


def test_existing_nonempty_dir_is_refused_and_left_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError):
        generate(str(out), **dict(SMALL, num_edges=1000))
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["out"], "temporary directory left behind"


def test_overwrite_replaces_existing_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    generate(str(out), overwrite=True, **dict(SMALL, num_edges=1000))
    assert not (out / "stale.txt").exists()
    assert (out / "graph.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_existing_empty_dir_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    generate(str(out), **dict(SMALL, num_edges=1000))
    assert (out / "graph.json").is_file()


def test_failure_leaves_no_partial_output(tmp_path: Path, monkeypatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(synthetic_generator, "write_communities", boom)
    with pytest.raises(RuntimeError):
        generate(str(tmp_path / "out"), **dict(SMALL, num_edges=1000))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mix", ["1,2,3", "a,b,c,d", "0,0,0,0", "-1,1,1,1"])
def test_bad_relation_mix_is_rejected(tmp_path: Path, mix: str) -> None:
    with pytest.raises(ValueError):
        generate(str(tmp_path / "out"), relation_mix=mix, **dict(SMALL, num_edges=1000))


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "tml.projects.twhin.synthetic", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


CLI_SIZES = (
    "--num-users",
    "300",
    "--num-tweets",
    "400",
    "--num-advertisers",
    "30",
    "--num-edges",
    "3000",
    "--num-communities",
    "5",
    "--rows-per-file",
    "1000",
    "--row-group-size",
    "500",
    "--validation-fraction",
    "0.1",
    "--seed",
    "11",
)


def test_cli_writes_graph_and_prints_summary(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = _run_cli("--out", str(out), *CLI_SIZES)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    assert str(out) in lines[0] and "2700 train" in lines[0] and "300 validation" in lines[0]
    graph = json.loads((out / "graph.json").read_text())
    assert graph["seed"] == 11
    assert graph["num_train_edges"] == 2700 and graph["num_validation_edges"] == 300
    assert len(list((out / "train").glob("part-*.parquet"))) == 3


def test_cli_refuses_nonempty_dir_with_exit_code_2(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    proc = _run_cli("--out", str(out), *CLI_SIZES)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "--overwrite" in proc.stderr
    assert sorted(os.listdir(out)) == ["keep.txt"]
    proc = _run_cli("--out", str(out), "--overwrite", *CLI_SIZES)
    assert proc.returncode == 0, proc.stderr
    assert not (out / "keep.txt").exists()


def test_cli_help_lists_flags() -> None:
    proc = _run_cli("--help")
    assert proc.returncode == 0
    for flag in ("--out", "--seed", "--num-edges", "--relation-mix", "--overwrite"):
        assert flag in proc.stdout


def test_homogeneous_schema_has_one_table_and_four_relations_on_it(tmp_path: Path) -> None:
    graph = generate(
        str(tmp_path / "g"), schema="homogeneous", num_entities=500, num_edges=4000,
        validation_fraction=0.01,
    )  # fmt: skip
    assert graph["tables"] == {"entity": 500}
    assert [(r["lhs"], r["rhs"]) for r in graph["relations"]] == [("entity", "entity")] * 4
    train = _read_split(tmp_path / "g", "train")
    rel = train.column("rel").to_numpy()
    share = np.bincount(rel, minlength=4) / len(rel)
    np.testing.assert_allclose(share, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    for side in ("lhs", "rhs"):
        ids = train.column(side).to_numpy()
        assert ids.min() >= 0 and ids.max() < 500
    assert (train.column("lhs").to_numpy() != train.column("rhs").to_numpy()).all()

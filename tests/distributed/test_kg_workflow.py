"""A new knowledge graph end to end with no hand edits: import -> run.py -> evaluate -> neighbors
by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import REPO, RUN_PY, assert_ok, torchrun_env
from tests.helpers_data import write_group_graph
from tml.projects.twhin.artifacts.embedding_files import read_table


def test_imported_graph_trains_and_evaluates_without_edits(tmp_path: Path) -> None:
    write_group_graph(tmp_path)  # 50 people in 5 groups; relations link groups
    env = torchrun_env()
    out = tmp_path / "graph"
    imported = subprocess.run(
        [sys.executable, "-m", "tml.projects.twhin.import_kg", "--out", str(out),
         "--train", str(tmp_path / "train.tsv"), "--valid", str(tmp_path / "valid.tsv"),
         "--test", str(tmp_path / "test.tsv"), "--operator", "complex_diagonal", "--dim", "16"],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert_ok(imported)
    save_dir = tmp_path / "run"
    trained = subprocess.run(
        [sys.executable, str(RUN_PY), f"--config_yaml_path={out / 'config.yaml'}",
         f"--save_dir={save_dir}"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert_ok(trained)
    evaluated = subprocess.run(
        [sys.executable, "-m", "tml.projects.twhin.evaluate", f"--save_dir={save_dir}",
         "--split", "test"],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert_ok(evaluated)
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert metrics == json.loads((save_dir / "eval" / "test.json").read_text())
    assert metrics["split"] == "test" and metrics["filtered"] and metrics["edges"] == 50
    # Random ranking over 50 entities gives an MRR near 0.09; knowing the groups, about 0.3.
    assert metrics["mrr"] > 0.2, metrics
    # The export carries the importer's names, and neighbours are asked for and shown by name.
    vocabulary = pq.read_table(out / "vocab" / "entity.parquet").to_pydict()
    exported = read_table(save_dir / "embeddings", "entity")
    assert [exported.names[i] for i in vocabulary["id"]] == vocabulary["name"]
    neighbours = subprocess.run(
        [sys.executable, "-m", "tml.projects.twhin.neighbors", f"--save_dir={save_dir}",
         "--table", "entity", "--query", "person1", "--relation", "knows_1", "-k", "3"],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert_ok(neighbours)
    header, columns, *rows = neighbours.stdout.strip().splitlines()
    assert header.startswith("entity 'person1' (id ") and "knows_1" in header
    assert columns.split() == ["rank", "id", "name", "score"] and len(rows) == 3
    # knows_1 links group g to group g + 1: person1 (group 0) knows people 10..19.
    named = [row.split()[2] for row in rows]
    assert all(name.startswith("person") for name in named), neighbours.stdout
    assert sum(10 <= int(name.removeprefix("person")) < 20 for name in named) >= 2, named

"""Export formats read back exactly, with names; exact and faiss search agree.

The checkpoint here is a real DCP checkpoint written offline, shaped like the trainer's (table
weights and relation parameters under "model"), next to an importer-style vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed.checkpoint as dcp
import yaml

from tml.core.config import load_config
from tml.projects.twhin.artifacts.embedding_files import FORMATS, read_table, relation_scorer
from tml.projects.twhin.artifacts.export import export
from tml.projects.twhin.artifacts.exported_table import ArrayTable
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.models.comparators import COMPARATORS
from tml.projects.twhin.models.scorer import EdgeScorer
from tml.projects.twhin.search.backends import FaissIndex, exact_search
from tml.projects.twhin.search.neighbors import find_neighbors

PEOPLE = ["ann", "bob", "tab\there", "dora", "eve", "fay", None]  # None: no vocabulary entry


def make_run(
    tmp_path: Path, reciprocal: bool = False
) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A save dir with config.yaml and checkpoints/step_1, and the graph's vocab/ for `person`."""
    graph = tmp_path / "graph"
    (graph / "train").mkdir(parents=True)
    (graph / "vocab").mkdir()
    named = [(i, n) for i, n in enumerate(PEOPLE) if n is not None]
    pq.write_table(
        pa.table({"id": pa.array([i for i, _ in named], pa.int64()),
                  "name": [n for _, n in named]}),
        graph / "vocab" / "person.parquet",
    )  # fmt: skip
    optimizer = {"sgd": {"lr": 0.1}}
    config = {
        "model": {
            "translation_optimizer": optimizer,
            "embeddings": {"tables": [
                {"name": "person", "num_embeddings": len(PEOPLE), "embedding_dim": 4,
                 "optimizer": optimizer},
                {"name": "place", "num_embeddings": 5, "embedding_dim": 4, "data_type": "fp16",
                 "optimizer": optimizer},
            ]},
            "relations": [{"name": "lives_in", "lhs": "person", "rhs": "place",
                           "operator": "translation"}],
            "reciprocal_relations": reciprocal,
        },
        "train_data": {"data_root": str(graph / "train"), "per_replica_batch_size": 4,
                       "global_negatives": 1, "in_batch_negatives": 0},
    }  # fmt: skip
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    (save_dir / "config.yaml").write_text(yaml.safe_dump(config))
    parsed = load_config(TwhinConfig, save_dir / "config.yaml")
    generator = torch.Generator().manual_seed(0)
    tables = {
        "person": torch.randn(len(PEOPLE), 4, generator=generator),
        "place": torch.randn(5, 4, generator=generator).half(),
    }
    dense = {
        f"scorer.{key}": value + torch.randn(value.shape, generator=generator)
        for key, value in EdgeScorer(parsed.model).state_dict().items()
    }
    state = {f"tables.embedding_bags.{name}.weight": weights for name, weights in tables.items()}
    checkpoint = save_dir / "checkpoints" / "step_1"
    dcp.save({"model": {**state, **dense}}, checkpoint_id=str(checkpoint), no_dist=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 1}))
    return save_dir, tables, dense


def test_every_format_round_trips_rows_and_names(tmp_path: Path) -> None:
    save_dir, tables, dense = make_run(tmp_path)
    written = export(save_dir, formats=FORMATS)
    out = save_dir / "embeddings"
    assert {p.name for p in written} == {
        "person.parquet", "person.npy", "person.names.txt", "person.tsv", "person.metadata.tsv",
        "place.parquet", "place.npy", "place.tsv", "place.metadata.tsv", "relations.parquet",
    }  # fmt: skip
    assert not list(out.glob(".*")), "no staging files left behind"
    person = tables["person"].numpy()
    parquet = read_table(out, "person")
    np.testing.assert_array_equal(parquet.vectors, person)
    assert parquet.names == PEOPLE
    assert read_table(out, "place").names is None, "place has no vocabulary"
    np.testing.assert_array_equal(read_table(out, "place").vectors, tables["place"].float())
    mapped = np.load(out / "person.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.float32
    np.testing.assert_array_equal(mapped, person)
    names = (out / "person.names.txt").read_text().splitlines()
    assert names == ["ann", "bob", "tab here", "dora", "eve", "fay", ""]
    np.testing.assert_allclose(np.loadtxt(out / "person.tsv", delimiter="\t"), person, rtol=1e-7)
    labels = (out / "person.metadata.tsv").read_text().splitlines()
    assert labels == ["ann", "bob", "tab here", "dora", "eve", "fay", "6"]
    assert (out / "place.metadata.tsv").read_text().splitlines() == ["0", "1", "2", "3", "4"]
    # relations.parquet rebuilds the trained operator.
    scorer = relation_scorer(load_config(TwhinConfig, save_dir / "config.yaml"), out)
    torch.testing.assert_close(
        scorer.relation_parameters(0)["translation"],
        dense["scorer.operator_groups.0.translation"][0],
    )


def test_a_vocabulary_larger_than_the_table_is_refused(tmp_path: Path) -> None:
    save_dir, _, _ = make_run(tmp_path)
    config = yaml.safe_load((save_dir / "config.yaml").read_text())
    config["model"]["embeddings"]["tables"][0]["num_embeddings"] = 3
    (save_dir / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="vocab/person.parquet: ids reach 5 but the table has 3"):
        export(save_dir)


@pytest.mark.parametrize("comparator", ["dot", "cos", "l2", "l1"])
def test_exact_and_faiss_search_agree_on_a_small_table(comparator: str) -> None:
    generator = torch.Generator().manual_seed(1)
    table = torch.randn(3000, 8, generator=generator)
    queries = torch.randn(20, 8, generator=generator)
    scores, rows = exact_search(queries, ArrayTable("t", table.numpy()), comparator, k=10)
    # Brute force: every score, sorted.
    full = COMPARATORS[comparator]().all_pairs(queries, table)
    np.testing.assert_array_equal(rows, full.argsort(1, descending=True)[:, :10].numpy())
    for nlist in (0, 16):  # flat, then IVF searching every cluster
        index = FaissIndex.build(ArrayTable("t", table.numpy()), comparator, nlist)
        faiss_scores, faiss_rows = index.search(queries.numpy(), 10, nprobe=max(nlist, 1))
        np.testing.assert_array_equal(faiss_rows, rows)
        np.testing.assert_allclose(faiss_scores, scores, rtol=1e-4, atol=1e-4)


def test_exact_search_leaves_out_the_excluded_row() -> None:
    table = torch.eye(4) + 0.1
    scores, rows = exact_search(table[:2], ArrayTable("t", table.numpy()), "cos", k=3,
                                exclude=torch.tensor([0, 1]))  # fmt: skip
    assert 0 not in rows[0] and 1 not in rows[1]
    assert rows.shape == (2, 3) and np.all(np.diff(scores, axis=1) <= 0)


def test_rhs_queries_go_through_the_reverse_operator_with_reciprocal_relations(
    tmp_path: Path,
) -> None:
    save_dir, tables, dense = make_run(tmp_path, reciprocal=True)
    export(save_dir)
    result = find_neighbors(save_dir, "place", ["2"], relation="lives_in", k=3)
    # Brute force: who lives in place 2, by <e_person, rev(e_place)> (the dot comparator).
    reverse = dense["scorer.reverse_operator_groups.0.translation"][0]
    scores = tables["person"] @ (tables["place"][2].float() + reverse)
    best = scores.topk(3)
    neighbours = result["results"][0]["neighbors"]
    assert result["target"] == "person"
    assert [n["id"] for n in neighbours] == best.indices.tolist()
    assert [n["name"] for n in neighbours] == [PEOPLE[i] for i in best.indices.tolist()]
    np.testing.assert_allclose([n["score"] for n in neighbours], best.values, rtol=1e-5)
    with pytest.raises(ValueError, match="--relation 'nope' is not one of lives_in"):
        find_neighbors(save_dir, "place", ["2"], relation="nope")
    with pytest.raises(KeyError, match="'zed' is not a name or an id of table 'person'"):
        find_neighbors(save_dir, "person", ["zed"])

"""Graph versions, piece by piece: ids kept by `import_kg --previous` and `synthetic --grow-from`,
loading into the leading rows of a bigger table, the shrink check, the anchor term and the drift
metrics (the warm start itself runs for real in tests/distributed/test_warm_start_grown.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed.checkpoint as dcp

from tests.conftest import REPO
from tests.unit.test_model import CONFIG, make_model_and_builder
from tml.core.leading_rows import load_leading_rows
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.eval.drift import shared_rows, table_drift
from tml.projects.twhin.models.model import TwhinModel
from tml.projects.twhin.tools import synthetic
from tml.projects.twhin.tools.import_kg import import_kg
from tml.projects.twhin.training.warm_start import WarmStartError, match_tables, saved_tensors

KINSHIPS = REPO / "datasets" / "kinships"


def write_triples(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(row) + "\n" for row in rows))
    return path


def read_vocab(out: Path, table: str = "entity") -> dict[str, int]:
    data = pq.read_table(out / "vocab" / f"{table}.parquet").to_pydict()
    return dict(zip(data["name"], data["id"], strict=True))


def test_kinships_in_two_versions_keeps_every_name_and_relation_id(tmp_path: Path) -> None:
    rows = [line.split("\t") for line in (KINSHIPS / "train.tsv").read_text().splitlines()]
    people = sorted({row[0] for row in rows} | {row[2] for row in rows})
    late, gone = set(people[:8]), set(people[8:12])  # join in v2 / leave in v2
    first = [r for r in rows if not {r[0], r[2]} & late]
    second = [r for r in rows if not {r[0], r[2]} & gone]
    v1 = tmp_path / "v1"
    import_kg(write_triples(tmp_path / "a.tsv", first), out=v1)
    summary = import_kg(write_triples(tmp_path / "b.tsv", second), out=tmp_path / "v2",
                        previous=v1)  # fmt: skip
    old, new = read_vocab(v1), read_vocab(tmp_path / "v2")
    assert all(new[name] == index for name, index in old.items()), "an id moved"
    assert sorted(set(new) - set(old)) == sorted(late)
    assert sorted(new[name] for name in late) == list(range(len(old), len(new)))
    assert gone <= set(new)  # absent names keep their rows
    mentioned = {r[0] for r in second} | {r[2] for r in second}
    assert summary["previous"]["absent"] == {"entity": len(set(old) - mentioned)} != {"entity": 0}
    relations = [pq.read_table(out / "relations.parquet").column("name").to_pylist()
                 for out in (v1, tmp_path / "v2")]  # fmt: skip
    assert relations[1][: len(relations[0])] == relations[0]
    edges = pq.read_table(tmp_path / "v2" / "train").to_pydict()
    index = {name: i for i, name in enumerate(relations[1])}
    assert [index[r[1]] for r in second[:50]] == edges["rel"][:50]
    assert [new[r[0]] for r in second[:50]] == edges["lhs"][:50]


def test_previous_must_be_an_import(tmp_path: Path) -> None:
    triples = write_triples(tmp_path / "a.tsv", [["a", "r", "b"]])
    with pytest.raises(ValueError, match="relations.parquet does not exist"):
        import_kg(triples, out=tmp_path / "v2", previous=tmp_path)


GRAPH = dict(num_users=200, num_tweets=300, num_advertisers=20, num_edges=4000,
             num_communities=4, rows_per_file=1500, row_group_size=500)  # fmt: skip


def edges_of(graph: Path, split: str) -> np.ndarray:
    table = pq.read_table(graph / split)
    return np.stack([table.column(c).to_numpy() for c in ("lhs", "rel", "rhs")], axis=1)


def test_grown_graph_keeps_the_old_graph_and_adds_edges_of_new_entities(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    synthetic.generate(str(v1), seed=1, **GRAPH)
    grown = synthetic.grow(str(tmp_path / "v2"), str(v1), new_fraction=0.1)
    assert grown["tables"] == {"user": 220, "tweet": 330, "advertiser": 22}
    assert grown["grown_from"]["tables"] == {"user": 200, "tweet": 300, "advertiser": 20}
    old_sizes = np.array([[200, 200], [200, 300], [200, 300], [200, 20]])  # follows fav rt click
    total_new = 0
    for split in ("train", "validation"):
        old, new = edges_of(v1, split), edges_of(tmp_path / "v2", split)
        np.testing.assert_array_equal(new[: len(old)], old)
        added = new[len(old) :]
        lhs_new = added[:, 0] >= old_sizes[added[:, 1], 0]
        rhs_new = added[:, 2] >= old_sizes[added[:, 1], 1]
        assert (lhs_new | rhs_new).all(), "a new edge between old entities"
        total_new += len(added)
    assert total_new == 400
    old_labels, new_labels = (
        {(t, i): c for t, i, c in zip(*pq.read_table(g / "communities.parquet").to_pydict().values(),
                                      strict=True)}
        for g in (v1, tmp_path / "v2")
    )  # fmt: skip
    assert len(new_labels) == 572 and all(new_labels[key] == c for key, c in old_labels.items())
    again = synthetic.grow(str(tmp_path / "v2b"), str(v1), new_fraction=0.1)
    assert again["num_train_edges"] == grown["num_train_edges"]
    np.testing.assert_array_equal(
        edges_of(tmp_path / "v2b", "train"), edges_of(tmp_path / "v2", "train")
    )


def save_tiny_checkpoint(path: Path, rows: int) -> torch.Tensor:
    weight = torch.arange(rows * 3, dtype=torch.float32).reshape(rows, 3)
    dcp.save({"model.tables.embedding_bags.user.weight": weight}, checkpoint_id=str(path),
             no_dist=True)  # fmt: skip
    return weight


def test_saved_rows_fill_the_leading_rows_of_a_bigger_table(tmp_path: Path) -> None:
    saved = save_tiny_checkpoint(tmp_path / "ckpt", rows=4)
    bigger = torch.full((6, 3), -1.0)
    key = "model.tables.embedding_bags.user.weight"
    load_leading_rows({key: bigger}, tmp_path / "ckpt")  # no process group: one process
    torch.testing.assert_close(bigger[:4], saved)
    assert (bigger[4:] == -1).all(), "rows past the saved ones must be left as they were"


def test_a_table_that_shrank_is_an_error_naming_it(tmp_path: Path) -> None:
    save_tiny_checkpoint(tmp_path / "ckpt", rows=4)
    raw = {**CONFIG, "model": {**CONFIG["model"], "embeddings": {"tables": [
        {"name": "user", "num_embeddings": 3, "embedding_dim": 3,
         "optimizer": {"sgd": {"lr": 0.1}}}]}, "relations": [
        {"name": "follows", "lhs": "user", "rhs": "user"}]}}  # fmt: skip
    config = TwhinConfig.model_validate(raw)
    saved = saved_tensors(tmp_path / "ckpt")
    with pytest.raises(WarmStartError, match="table 'user' has 4 rows but .*tables\\[0\\] has 3"):
        match_tables(config, saved, tmp_path / "ckpt")
    config.model.embeddings.tables[0].num_embeddings = 5  # grown: fine
    assert match_tables(config, saved, tmp_path / "ckpt").old_rows == {"user": 4}


def anchored_loss(anchor: float, old_rows: int, shift: float) -> float:
    """The training loss of one batch with anchors `shift` away from the tables."""
    plain, builder = make_model_and_builder()
    config = TwhinConfig.model_validate(CONFIG)
    model = TwhinModel(config.model, table_device=torch.device("cpu"), anchor=anchor)
    model.load_state_dict(plain.state_dict(), strict=False)
    if model.anchors is not None:
        for name, bag in model.tables.embedding_bags.items():
            model.anchors.embedding_bags[f"{name}__anchor"].weight.data = bag.weight.data + shift
        model.anchor_term.old_rows.fill_(old_rows)
    rng = np.random.default_rng(0)
    lhs, rel = rng.integers(0, 30, 8), np.sort(rng.integers(0, 2, 8))
    batch = builder.build(lhs, rel, rng.integers(0, 30, 8), rng)
    return float(model(batch)[0].detach())


def test_the_anchor_changes_the_loss_only_when_its_strength_is_above_zero() -> None:
    plain = anchored_loss(0.0, 40, 0.5)
    assert anchored_loss(0.0, 40, 0.5) == plain
    assert anchored_loss(0.5, 40, 0.0) == pytest.approx(plain, abs=1e-7)  # at the anchor: 0
    assert anchored_loss(0.5, 0, 0.5) == pytest.approx(plain, abs=1e-7)  # no old rows: free
    # Every positive has 2 rows (lhs, rhs) of dim 4, each 0.5 away per coordinate: 0.5 * 2.
    assert anchored_loss(0.5, 40, 0.5) == pytest.approx(plain + 0.5 * 2 * 4 * 0.25, rel=1e-5)


def test_drift_of_identical_and_rotated_embeddings() -> None:
    rng = np.random.default_rng(0)
    before = rng.standard_normal((300, 8))
    same = table_drift("t", before, before.copy(), k=10, sample=100)
    assert (same.overlap_at_k, same.aligned_cosine, same.similarity_rank_correlation) == (
        pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0))  # fmt: skip
    rotation, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    rotated = table_drift("t", before, before @ rotation, k=10, sample=100)
    assert rotated.aligned_cosine == pytest.approx(1.0, abs=1e-9)
    assert rotated.overlap_at_k == pytest.approx(1.0)  # cosine neighbours ignore rotations
    moved = table_drift("t", before, before + rng.standard_normal((300, 8)), k=10, sample=100)
    assert moved.overlap_at_k < 0.6 and moved.aligned_cosine < 0.9
    other = table_drift("t", before, rng.standard_normal((300, 8)), k=10, sample=100)
    assert other.overlap_at_k < 0.1 and abs(other.similarity_rank_correlation) < 0.1


def test_entities_are_matched_by_name_when_both_versions_have_names() -> None:
    old, new = shared_rows(["a", "b", "c"], ["c", "x", "a"], 3, 3)
    assert (old.tolist(), new.tolist()) == ([0, 2], [2, 0])
    old, new = shared_rows(None, None, 3, 5)
    assert old.tolist() == new.tolist() == [0, 1, 2]

"""Behavioural tests of the parquet edge reader (EdgeDataset) and the batch layout it produces.

Every test writes real parquet files into tmp_path and reads them back through `make_dataset`,
the same path the trainer takes. Edges are written with lhs = their global row, so the real
positives of each batch, decoded from the KeyedJaggedTensor, say exactly which rows were read.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pydantic
import pytest

from tests.helpers_data import (
    ROW_GROUP_SIZE,
    TABLE_NAMES,
    TABLES,
    as_batched,
    assert_same_batches,
    config_dict,
    dataset,
    decode_slots,
    epoch_edges,
    make_config,
    make_edges,
    real_edges,
    relation_tables,
    write_dataset,
    write_edges,
    write_parquet,
)
from tml.projects.twhin.batch.layout import GraphShape, SlotLayout, chunk_groups, max_chunks
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.dataset import make_dataset
from tml.projects.twhin.data.files import DataError


@pytest.fixture
def edges_root(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """97 edges in 3 files (30, 40, 27 rows in sorted order) with row groups of 10."""
    root = tmp_path / "edges"
    return root, write_dataset(root)


def sorted_rows(edges: np.ndarray) -> np.ndarray:
    return edges[np.argsort(edges[:, 0], kind="stable")]


# -- partitioning across ranks ----------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("epoch", [0, 1])
def test_ranks_read_disjoint_spans_that_together_cover_every_edge_once(
    edges_root, world_size, epoch
):
    root, edges = edges_root
    config = make_config(root)
    per_rank = [
        epoch_edges(dataset(config, rank=r, world_size=world_size), epoch)
        for r in range(world_size)
    ]

    combined = np.concatenate(per_rank)
    assert len(combined) == len(edges)
    # lhs is the global row: no row twice, none missing, and the full triple is the written one.
    np.testing.assert_array_equal(sorted_rows(combined), edges)
    # Spans of ceil(N / world_size) edges; the last rank takes what is left.
    span = math.ceil(len(edges) / world_size)
    expected_sizes = [max(0, min(span, len(edges) - r * span)) for r in range(world_size)]
    assert [len(part) for part in per_rank] == expected_sizes


@pytest.mark.parametrize(
    ("files", "world_size", "batch_size"),
    [
        ({"a.parquet": 50, "b.parquet": 47}, 2, 8),  # 97 edges: spans 49 and 48
        ({"a.parquet": 50, "b.parquet": 47}, 3, 8),  # spans 33, 33, 31
        ({"a.parquet": 3}, 4, 2),  # fewer edges than ranks: the last rank has none
    ],
)
def test_every_rank_runs_steps_per_epoch_batches_and_padding_has_weight_zero(
    tmp_path, files, world_size, batch_size
):
    edges = write_dataset(tmp_path, files)
    config = make_config(tmp_path, per_replica_batch_size=batch_size)
    expected_steps = math.ceil(math.ceil(len(edges) / world_size) / batch_size)

    seen = []
    for rank in range(world_size):
        ds = dataset(config, rank=rank, world_size=world_size)
        assert ds.steps_per_epoch == expected_steps
        batches = list(ds.batches(0))
        assert len(batches) == expected_steps
        for batch in batches:
            weight = batch.weight.numpy()
            assert weight.shape == (batch_size,)
            assert set(np.unique(weight)) <= {0.0, 1.0}
            real = int(weight.sum())
            # real positives first, padding after them
            np.testing.assert_array_equal(weight, [1.0] * real + [0.0] * (batch_size - real))
            # the buckets cover the real positives only, so padding is never scored
            assert batch.pieces.num_real == real
            assert sum(b.stop - b.start for b in batch.pieces.buckets) == real
            assert batch.num_real_edges == real
        seen.append(np.concatenate([real_edges(b) for b in batches]))
    np.testing.assert_array_equal(sorted_rows(np.concatenate(seen)), edges)


def test_a_rank_with_no_edges_still_yields_padding_batches(tmp_path):
    write_dataset(tmp_path, {"a.parquet": 3})
    config = make_config(tmp_path, per_replica_batch_size=2)
    ds = dataset(config, rank=3, world_size=4)
    batches = list(ds.batches(0))
    assert len(batches) == ds.steps_per_epoch == 1
    assert batches[0].weight.sum().item() == 0.0


# -- shuffling and resume ---------------------------------------------------------------------


def test_shuffled_order_differs_between_epochs_and_from_the_file_order(edges_root):
    root, edges = edges_root
    ds = dataset(make_config(root))
    first, second = epoch_edges(ds, 0), epoch_edges(ds, 1)
    assert not np.array_equal(first[:, 0], second[:, 0])
    assert not np.array_equal(first[:, 0], edges[:, 0])
    np.testing.assert_array_equal(sorted_rows(first), sorted_rows(second))


def test_same_seed_gives_identical_batches_and_another_seed_does_not(edges_root):
    root, _ = edges_root
    for rank in (0, 1):
        run_a = list(dataset(make_config(root, seed=7), rank=rank, world_size=2).batches(1))
        run_b = list(dataset(make_config(root, seed=7), rank=rank, world_size=2).batches(1))
        assert_same_batches(run_a, run_b)
    other = dataset(make_config(root, seed=8), rank=0, world_size=2)
    same = dataset(make_config(root, seed=7), rank=0, world_size=2)
    assert not np.array_equal(epoch_edges(other, 1)[:, 0], epoch_edges(same, 1)[:, 0])


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("rank", [0, 1])
def test_resume_at_start_step_yields_exactly_the_tail_of_the_epoch(edges_root, shuffle, rank):
    root, _ = edges_root
    # Buffers of ~20 edges and batches of 8: resume points fall both on and inside buffers.
    config = make_config(root, per_replica_batch_size=8, shuffle_buffer_edges=20)
    epoch = 1
    full = list(dataset(config, rank=rank, world_size=2, shuffle=shuffle).batches(epoch))
    assert len(full) == 7
    for start in range(len(full) + 1):
        # A fresh dataset, as in a restarted process.
        resumed = dataset(config, rank=rank, world_size=2, shuffle=shuffle)
        assert_same_batches(list(resumed.batches(epoch, start_step=start)), full[start:])


def test_shuffle_false_keeps_the_global_order_in_contiguous_rank_spans(edges_root):
    root, edges = edges_root
    config = make_config(root)
    rank0 = epoch_edges(dataset(config, rank=0, world_size=2, shuffle=False), 0)
    rank1 = epoch_edges(dataset(config, rank=1, world_size=2, shuffle=False), 3)
    size = config.train_data.per_replica_batch_size
    np.testing.assert_array_equal(rank0, as_batched(edges[:49], size))
    np.testing.assert_array_equal(rank1, as_batched(edges[49:], size))


# -- selecting rows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "limit"),
    [
        (0, 5),
        (13, 50),  # starts inside a row group, crosses from part-a into part-b
        (30, 40),  # exactly part-b
        (90, 100),  # limit past the end: the last 7 rows
        (0, None),
    ],
)
def test_limit_and_offset_select_rows_of_the_global_order(edges_root, offset, limit):
    root, edges = edges_root
    config = make_config(root, offset=offset, limit=limit)
    expected = edges[offset : None if limit is None else offset + limit]

    ds = dataset(config, shuffle=False)
    assert ds.num_edges == len(expected)
    size = config.train_data.per_replica_batch_size
    np.testing.assert_array_equal(epoch_edges(ds), as_batched(expected, size))

    shuffled = [epoch_edges(dataset(config, rank=r, world_size=2), 0) for r in range(2)]
    np.testing.assert_array_equal(sorted_rows(np.concatenate(shuffled)), expected)


def test_train_and_validation_split_of_one_data_root_do_not_overlap(edges_root):
    root, edges = edges_root
    raw = config_dict(root, limit=60)
    raw["validation_data"] = {**raw["train_data"], "offset": 60}
    del raw["validation_data"]["limit"]
    config = TwhinConfig.model_validate(raw)

    shape = config.model.graph_shape()
    train = make_dataset(
        shape, config.train_data, "train_data", rank=0, world_size=1, seed=0, shuffle=True
    )
    validation = make_dataset(
        shape, config.validation_data, "validation_data", rank=0, world_size=1, seed=0,
        shuffle=False,
    )  # fmt: skip
    train_ids = set(epoch_edges(train)[:, 0].tolist())
    validation_ids = set(epoch_edges(validation)[:, 0].tolist())
    assert train_ids == set(range(60))
    assert validation_ids == set(range(60, len(edges)))


@pytest.mark.parametrize("form", ["directory", "glob", "file"])
def test_data_root_may_be_a_directory_a_glob_or_a_file(edges_root, form):
    root, edges = edges_root
    (root / "_SUCCESS").write_text("")  # directory listings skip non-.parquet files
    data_root = {
        "directory": str(root),
        "glob": str(root / "part-*.parquet"),
        "file": str(root / "part-b.parquet"),
    }[form]
    ds = dataset(make_config(data_root), shuffle=False)
    expected = edges[30:70] if form == "file" else edges
    size = ds.config.per_replica_batch_size
    np.testing.assert_array_equal(epoch_edges(ds), as_batched(expected, size))


# -- batch contents ---------------------------------------------------------------------------


def test_lookups_are_keyed_by_table_name_with_one_lookup_per_slot(edges_root):
    root, _ = edges_root
    config = make_config(root, per_replica_batch_size=8, global_negatives=3)
    layout = SlotLayout(config.model.graph_shape(), 8, 3, 2)
    # G uniform negatives per table and side: lhs from user and tweet, rhs from all three
    assert layout.lhs_tables == (0, 1) and layout.rhs_tables == (0, 1, 2)
    for batch in dataset(config).batches(0):
        assert batch.lookups.keys() == TABLE_NAMES
        assert batch.lookups.stride() == layout.num_slots == 2 * 8 + 3 * (2 + 3)
        slot_table, _ = decode_slots(batch)  # asserts one lookup per slot
        assert len(batch.lookups.values()) == layout.num_slots
        # positive slots use the tables of their relation
        relation = batch.relation.numpy()
        real = batch.weight.numpy() == 1.0
        lhs_tables = np.asarray([relation_tables(r)[0] for r in relation])
        rhs_tables = np.asarray([relation_tables(r)[1] for r in relation])
        np.testing.assert_array_equal(slot_table[:8][real], lhs_tables[real])
        np.testing.assert_array_equal(slot_table[8:16][real], rhs_tables[real])


def test_global_negatives_are_drawn_per_table_and_side_in_their_slots(edges_root):
    root, _ = edges_root
    negatives = 5
    config = make_config(root, per_replica_batch_size=8, global_negatives=negatives)
    layout = SlotLayout(config.model.graph_shape(), 8, negatives, 2)
    drawn: dict[tuple[int, str], list[int]] = {}
    for epoch in range(3):
        for batch in dataset(config).batches(epoch):
            slot_table, slot_id = decode_slots(batch)
            owners = [
                ("lhs", layout.lhs_negative_slots(i), t) for i, t in enumerate(layout.lhs_tables)
            ]
            owners += [
                ("rhs", layout.rhs_negative_slots(i), t) for i, t in enumerate(layout.rhs_tables)
            ]
            for side, slots, table in owners:
                assert (slot_table[slots] == table).all(), (table, side)
                ids = slot_id[slots]
                assert len(ids) == negatives
                assert ((ids >= 0) & (ids < TABLES[TABLE_NAMES[table]])).all()
                drawn.setdefault((table, side), []).extend(ids.tolist())
            # every bucket reads the negatives of its relations' tables
            for index, bucket in enumerate(batch.pieces.buckets):
                lhs_table, rhs_table = layout.graph.group_tables[bucket.group]
                first_negative = 2 * (len(batch.pieces.buckets) + 1)
                assert batch.pieces.lhs_negatives[index] == first_negative + lhs_table
                rhs_piece = first_negative + len(layout.lhs_tables) + rhs_table
                assert batch.pieces.rhs_negatives[index] == rhs_piece
    # Sampled, not constant: the small ad table (50 rows) is covered widely across steps.
    ad_ids = drawn[(TABLE_NAMES.index("ad"), "rhs")]
    assert len(set(ad_ids)) > 25
    assert max(ad_ids) < TABLES["ad"]


def test_positives_are_grouped_by_relation_and_keep_their_order_within_it(tmp_path):
    edges = np.asarray(
        [[0, 0, 5], [1, 2, 6], [2, 1, 7], [3, 0, 8], [4, 2, 9], [5, 2, 10]], dtype=np.int64
    )
    write_edges(tmp_path / "e.parquet", edges)
    config = make_config(tmp_path, per_replica_batch_size=8, in_batch_negatives=3)
    (batch,) = list(dataset(config, shuffle=False).batches(0))
    # relation 0: rows 0, 3; relation 1: row 2; relation 2: rows 1, 4, 5 (stable order); each
    # relation of this config is a scoring group of its own (its own tables)
    np.testing.assert_array_equal(real_edges(batch), edges[[0, 3, 2, 1, 4, 5]])
    assert [(b.group, b.width, b.num_chunks, b.start) for b in batch.pieces.buckets] == [
        (0, 2, 1, 0), (1, 1, 1, 2), (2, 3, 1, 3),
    ]  # fmt: skip
    assert batch.layout.in_batch_negatives == 3
    assert batch.relation.numpy().tolist() == [0, 0, 1, 2, 2, 2, 0, 0]  # padding: 0


def test_int32_columns_are_accepted(tmp_path):
    edges = make_edges(12)
    write_parquet(
        tmp_path / "e.parquet",
        {"lhs": edges[:, 0], "rel": edges[:, 1], "rhs": edges[:, 2]},
        types={"lhs": pa.int32(), "rel": pa.int8(), "rhs": pa.uint32()},
    )
    ds = dataset(make_config(tmp_path), shuffle=False)
    np.testing.assert_array_equal(
        epoch_edges(ds), as_batched(edges, ds.config.per_replica_batch_size)
    )


# -- bad data ---------------------------------------------------------------------------------


def _valid_columns(count: int = 25) -> dict[str, list[int]]:
    edges = make_edges(count)
    return {"lhs": edges[:, 0].tolist(), "rel": edges[:, 1].tolist(), "rhs": edges[:, 2].tolist()}


def _read_all(tmp_path: Path, **data) -> None:
    ds = dataset(make_config(tmp_path, **data), shuffle=False)
    for _ in ds.batches(0):
        pass


def test_missing_column_is_a_data_error_naming_the_file_and_column(tmp_path):
    write_edges(tmp_path / "a.parquet", make_edges(5))
    columns = _valid_columns()
    del columns["rel"]
    bad = write_parquet(tmp_path / "b.parquet", columns)
    with pytest.raises(DataError, match="missing column 'rel'") as error:
        dataset(make_config(tmp_path))
    assert str(bad) in str(error.value)


def test_float_column_is_a_data_error_naming_the_file_and_column(tmp_path):
    bad = write_parquet(tmp_path / "a.parquet", _valid_columns(), types={"rhs": pa.float64()})
    with pytest.raises(DataError, match="column 'rhs' has type double") as error:
        dataset(make_config(tmp_path))
    assert str(bad) in str(error.value)


@pytest.mark.parametrize(
    ("column", "row", "value", "message"),
    [
        ("lhs", 3, -1, r"lhs=-1 at file row 3 is outside \[0, 1000\)"),
        ("rhs", 17, -5, r"rhs=-5 at file row 17 is outside"),
        ("rel", 4, 4, r"rel=4 at file row 4 is outside \[0, 4\)"),
        ("rel", 11, -1, r"rel=-1 at file row 11 is outside \[0, 4\)"),
    ],
)
def test_out_of_range_value_is_a_data_error_naming_file_and_row(
    tmp_path, column, row, value, message
):
    columns = _valid_columns()
    columns[column][row] = value
    bad = write_parquet(tmp_path / "a.parquet", columns)
    with pytest.raises(DataError, match=message) as error:
        _read_all(tmp_path)
    assert str(bad) in str(error.value)


def test_id_beyond_the_relations_own_table_is_rejected_even_if_another_table_fits(tmp_path):
    columns = _valid_columns()
    # row 8 is a `fav` edge (user -> tweet): 500 is a valid user id but not a tweet id (100 rows)
    assert columns["rel"][8] == 1
    columns["rhs"][8] = 500
    bad = write_parquet(tmp_path / "a.parquet", columns)
    with pytest.raises(DataError, match=r"rhs=500 at file row 8 is outside \[0, 100\)") as error:
        _read_all(tmp_path)
    assert str(bad) in str(error.value)


def test_id_equal_to_num_embeddings_is_rejected(tmp_path):
    columns = _valid_columns()
    assert columns["rel"][0] == 0  # follows: user -> user
    columns["rhs"][0] = TABLES["user"]
    write_parquet(tmp_path / "a.parquet", columns)
    with pytest.raises(DataError, match=r"rhs=1000 at file row 0"):
        _read_all(tmp_path)


def test_null_value_is_a_data_error_naming_file_and_row(tmp_path):
    columns: dict[str, list] = _valid_columns()
    columns["lhs"][14] = None
    bad = write_parquet(tmp_path / "a.parquet", columns)
    with pytest.raises(DataError, match="null lhs at file row 14") as error:
        _read_all(tmp_path)
    assert str(bad) in str(error.value)


@pytest.mark.parametrize("offset", [0, 20 + 12])
def test_bad_row_in_a_later_row_group_is_reported_by_its_row_within_the_file(tmp_path, offset):
    write_edges(tmp_path / "a.parquet", make_edges(20))
    columns = _valid_columns(30)
    columns["rel"][14] = 9  # second row group (rows 10..19) of the second file
    bad = write_parquet(tmp_path / "b.parquet", columns, row_group_size=ROW_GROUP_SIZE)
    with pytest.raises(DataError, match=r"rel=9 at file row 14 ") as error:
        _read_all(tmp_path, offset=offset)
    assert str(bad) in str(error.value)
    assert "row group 1" in str(error.value)


def test_rows_outside_limit_and_offset_are_not_validated(tmp_path):
    columns = _valid_columns(30)
    columns["lhs"][25] = -1
    write_parquet(tmp_path / "a.parquet", columns)
    _read_all(tmp_path, limit=20)  # the bad row is never selected
    with pytest.raises(DataError, match="file row 25"):
        _read_all(tmp_path, offset=20)


@pytest.mark.parametrize(("offset", "limit"), [(97, None), (200, 5)])
def test_no_edges_after_offset_is_a_data_error(edges_root, offset, limit):
    root, _ = edges_root
    with pytest.raises(DataError, match=f"train_data: data_root {root} holds no edges"):
        dataset(make_config(root, offset=offset, limit=limit))


def test_empty_parquet_file_alone_is_a_data_error(tmp_path):
    write_parquet(tmp_path / "a.parquet", {"lhs": [], "rel": [], "rhs": []})
    with pytest.raises(DataError, match="holds no edges"):
        dataset(make_config(tmp_path))


def test_nonexistent_data_root_is_a_data_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"data_root {missing}: no such file or directory"):
        dataset(make_config(missing))


@pytest.mark.parametrize("data_root", ["empty_dir", "empty_dir/*.parquet"])
def test_data_root_without_parquet_files_is_a_data_error(tmp_path, data_root):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_dir" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no parquet files found"):
        dataset(make_config(tmp_path / data_root))


@pytest.mark.parametrize(
    ("name", "data_root"),
    [
        ("garbage.parquet", "."),  # directory: a .parquet file that is not parquet
        ("notes", "*"),  # glob: every matching data file is read
    ],
)
def test_non_parquet_file_is_a_data_error_naming_it(tmp_path, name, data_root):
    write_edges(tmp_path / "a.parquet", make_edges(5))
    bad = tmp_path / name
    bad.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match="cannot read as parquet") as error:
        dataset(make_config(tmp_path / data_root if data_root != "." else tmp_path))
    assert str(bad) in str(error.value)


@pytest.mark.parametrize("bookkeeping", ["_SUCCESS", "_metadata", ".part-0.parquet.crc"])
def test_spark_bookkeeping_files_matched_by_a_glob_are_skipped(tmp_path, bookkeeping):
    write_edges(tmp_path / "a.parquet", make_edges(5))
    (tmp_path / bookkeeping).write_bytes(b"not edges")
    assert dataset(make_config(tmp_path / "*")).num_edges == 5


def test_a_negative_seed_is_rejected_by_the_config_or_usable_by_the_reader(edges_root):
    root, _ = edges_root
    try:
        config = make_config(root, seed=-1)
    except pydantic.ValidationError as error:
        assert "seed" in str(error)
        return
    batches = list(dataset(config).batches(0))
    assert len(batches) == dataset(config).steps_per_epoch


def test_global_negatives_per_chunk_come_from_each_chunks_relation(tmp_path):
    # relation 0: 5 positives (chunks of 2: 2 full, 1 last), relation 1: 1 positive (1 chunk),
    # relations 2 and 3: none; room for (8 + 1 * 4) // 2 = 6 owners, 2 of them unused.
    edges = np.asarray(
        [[0, 0, 5], [1, 0, 6], [2, 1, 7], [3, 0, 8], [4, 0, 9], [5, 0, 10]], dtype=np.int64
    )
    write_edges(tmp_path / "e.parquet", edges)
    config = make_config(tmp_path, per_replica_batch_size=8, in_batch_negatives=1,
                         global_negatives=3, global_negatives_per_chunk=True)  # fmt: skip
    (batch,) = list(dataset(config, shuffle=False).batches(0))
    layout = SlotLayout(config.model.graph_shape(), 8, 3, 1, global_negatives_per_chunk=True)
    assert layout.num_owners == (6, 6) and batch.lookups.stride() == layout.num_slots
    slot_table, slot_id = decode_slots(batch)
    owner_relation = [0, 0, 0, 1]  # chunks in bucket order: relation 0's two full, its last, 1
    for owner in range(layout.num_owners[0]):
        lhs, rhs = layout.lhs_negative_slots(owner), layout.rhs_negative_slots(owner)
        if owner < len(owner_relation):
            lhs_table, rhs_table = relation_tables(owner_relation[owner])
            assert (slot_table[lhs] == lhs_table).all() and (slot_table[rhs] == rhs_table).all()
        else:  # unused owners look up row 0 of the first table
            assert (slot_table[lhs] == 0).all() and (slot_id[lhs] == 0).all()
            assert (slot_table[rhs] == 0).all() and (slot_id[rhs] == 0).all()


@pytest.mark.parametrize(
    ("batch_size", "in_batch", "relations"),
    [(8, 1, 4), (1000, 50, 1000), (10000, 50, 4), (7, 0, 3)],
)
def test_max_chunks_bounds_the_chunks_of_any_batch(batch_size, in_batch, relations) -> None:
    rng = np.random.default_rng(0)
    most = 0
    for present in {1, min(relations, batch_size), relations // 2 + 1}:
        for _ in range(20):  # random counts of `present` relations adding up to the batch
            cuts = np.sort(rng.choice(np.arange(1, batch_size), present - 1, replace=False))
            counts = np.diff(np.concatenate([[0], cuts, [batch_size]]))
            most = max(most, sum(rows // chunk for count in counts
                                 for rows, chunk in chunk_groups(int(count), in_batch)))  # fmt: skip
        # the worst case: every relation present but one with a single positive
        counts = [1] * (present - 1) + [batch_size - present + 1]
        most = max(most, sum(rows // chunk for count in counts
                             for rows, chunk in chunk_groups(count, in_batch)))  # fmt: skip
    assert most <= max_chunks(batch_size, in_batch, relations)


@pytest.mark.parametrize("count", [0, 1, 50, 51, 52, 101, 5000])
def test_chunk_groups_cover_a_relation_in_the_chunks_the_buckets_hold(count: int) -> None:
    groups = chunk_groups(count, 50)
    assert sum(rows for rows, _ in groups) == count
    assert all(rows % chunk == 0 for rows, chunk in groups)
    chunks = -(-count // min(51, count)) if count else 0  # ceil(count / (K + 1)), or 1 chunk
    assert sum(rows // chunk for rows, chunk in groups) == chunks
    # full chunks of K + 1 (or the whole relation when smaller), then at most one shorter chunk
    assert len(groups) <= 2 and (not groups or groups[0][1] == min(51, count))
    # the layout's buckets hold the same chunks (one relation, so one scoring group)
    graph = GraphShape(("entity",), (10,), ((0, 0),))
    buckets = SlotLayout(graph, max(count, 1), 3, 50).buckets(np.array([count]))
    assert [(b.num_chunks * b.width, b.width) for b in buckets] == groups

"""Exported tables read lazily (search/): the same rows and names as reading them whole, and a
faiss index built window by window that is the index built from the whole table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_embedding_files import make_run
from tml.projects.twhin.artifacts.embedding_files import FORMATS, read_table
from tml.projects.twhin.artifacts.export import export
from tml.projects.twhin.artifacts.exported_table import (
    ArrayTable,
    NpyTable,
    ParquetTable,
    open_table,
)
from tml.projects.twhin.search.backends import FaissIndex, _metric, _prepare


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    save_dir, _, _ = make_run(tmp_path)
    export(save_dir, formats=FORMATS)
    return save_dir / "embeddings"


@pytest.mark.parametrize("kind", ["npy", "parquet"])
def test_lazy_tables_give_the_rows_and_names_of_the_whole_table(exported: Path, kind: str) -> None:
    whole = read_table(exported, "person")
    table = (NpyTable("person", exported / "person.npy") if kind == "npy"
             else ParquetTable("person", exported / "person.parquet"))  # fmt: skip
    assert (table.num_rows, table.dim, table.named) == (7, 4, True)
    windows = list(table.windows(max_rows=3))
    assert [start for start, _ in windows] == [0, 3, 6]
    np.testing.assert_array_equal(np.concatenate([rows for _, rows in windows]), whole.vectors)
    ids = np.array([6, 0, 3, 3])
    np.testing.assert_array_equal(table.rows(ids), whole.vectors[ids])
    # The npy export's names file turns tabs into spaces (docs/embeddings.md).
    tab = "tab\there" if kind == "parquet" else "tab here"
    assert table.names_of([6, 0, 2]) == [None, "ann", tab]
    assert table.find("bob") == 1 and table.find(tab) == 2 and table.find("5") == 5
    with pytest.raises(KeyError, match="'zed' is not a name or an id of table 'person'"):
        table.find("zed")
    unnamed = open_table(exported, "place")
    assert isinstance(unnamed, NpyTable) and not unnamed.named
    assert unnamed.names_of([1]) == [None] and unnamed.find("4") == 4


def test_open_table_prefers_the_npy_export_and_falls_back_to_parquet(exported: Path) -> None:
    assert isinstance(open_table(exported, "person"), NpyTable)
    (exported / "person.npy").unlink()
    assert isinstance(open_table(exported, "person"), ParquetTable)
    (exported / "person.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="run tml.projects.twhin.export first"):
        open_table(exported, "person")


@pytest.mark.parametrize("comparator", ["dot", "cos", "l2"])
def test_an_index_built_window_by_window_is_the_index_of_the_whole_table(
    tmp_path: Path, comparator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss

    vectors = np.random.default_rng(0).standard_normal((5000, 8), dtype=np.float32)
    np.save(tmp_path / "t.npy", vectors)
    table = NpyTable("t", tmp_path / "t.npy")
    monkeypatch.setattr("tml.projects.twhin.artifacts.exported_table.WINDOW_ROWS", 700)
    windowed = FaissIndex.build(table, comparator, nlist=16)
    # The specification: centroids trained on the same sample, then every row added at once.
    metric, data = _metric(comparator), _prepare(vectors, comparator)
    whole = faiss.IndexIVFFlat(faiss.IndexFlat(8, metric), 8, 16, metric)
    whole.train(data[np.sort(np.random.default_rng(0).choice(5000, 16 * 64, replace=False))])
    whole.add(data)
    whole.nprobe = 4
    queries = np.random.default_rng(1).standard_normal((10, 8), dtype=np.float32)
    _, rows = windowed.search(queries, 10, nprobe=4)
    _, expected = whole.search(_prepare(queries, comparator), 10)
    np.testing.assert_array_equal(rows, expected)


def test_a_saved_index_is_memory_mapped_not_read(tmp_path: Path) -> None:
    import faiss

    vectors = np.random.default_rng(0).standard_normal((3000, 8), dtype=np.float32)
    built = FaissIndex.build(ArrayTable("t", vectors), "dot", nlist=8)
    path = tmp_path / "t.faiss"
    faiss.write_index(built.index, str(path))
    reused = FaissIndex.read(path, "dot")
    assert str(path) in Path("/proc/self/maps").read_text(), "the index file is mapped"
    queries = vectors[:5]
    np.testing.assert_array_equal(reused.search(queries, 5, 8)[1], built.search(queries, 5, 8)[1])

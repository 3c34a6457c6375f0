"""Nearest-neighbour search backends: exact (batched matrix products) and a faiss index.

Both return scores in the comparator's own units (larger is better), so their results compare
directly. faiss ranks by inner product or by a distance; each comparator maps to one of those:

=========  =================================  ===========================
comparator  faiss metric                        score from faiss' value v
=========  =================================  ===========================
dot         inner product                      v
cos         inner product of unit vectors      v
l2          L2 (faiss returns it squared)      -sqrt(v)
l1          L1                                 -v
=========  =================================  ===========================

The index is an inverted file (IVF: `nlist` clusters, `nprobe` of them searched per query,
approximate; by default nlist/16 clusters, at least 8, are searched) for large tables and a
flat one (exhaustive, exact) for small ones. It is built from the export a row window at a time
(the IVF centroids trained on a sample of rows), so the table is never in memory whole: memory
is the index plus one window. It is stored under `D/index/<table>.<comparator>.faiss`
(`RunDir.faiss_index`) with a JSON note of the file it was built from, rebuilt when that file
changes, and memory-mapped when reused: a query reads only the clusters it searches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from tml.core.files import atomic_output
from tml.projects.twhin.artifacts.exported_table import ExportedTable
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.eval.scoring import top_k
from tml.projects.twhin.models.comparators import COMPARATORS

FLAT_BELOW_ROWS = 50_000
"""Tables smaller than this get an exhaustive flat index: IVF saves nothing there."""
TRAIN_ROWS_PER_LIST = 64
"""Rows sampled per IVF cluster to train its centroids (faiss warns below 39)."""
MIN_NPROBE = 8
"""Default clusters searched: nlist/16 (about 6% of the rows), at least this many."""


def exact_search(
    queries: torch.Tensor,
    candidates: ExportedTable,
    comparator: str,
    k: int,
    candidate_operator: Callable[[torch.Tensor], torch.Tensor] | None = None,
    exclude: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), (q, k) each, best first, scoring every candidate a window at a time."""
    windows = ((start, torch.from_numpy(rows)) for start, rows in candidates.windows())
    scores, rows = top_k(
        queries.float(), windows, COMPARATORS[comparator](), k, candidate_operator, exclude
    )
    return scores.numpy(), rows.numpy()


def _faiss() -> ModuleType:
    import faiss  # imported on demand: most commands never search

    return faiss


def _metric(comparator: str) -> int:
    faiss = _faiss()
    metrics = {
        "dot": faiss.METRIC_INNER_PRODUCT,
        "cos": faiss.METRIC_INNER_PRODUCT,
        "l2": faiss.METRIC_L2,
        "l1": faiss.METRIC_L1,
    }
    if comparator not in metrics:
        raise ValueError(
            f"no faiss metric matches comparator {comparator!r} (faiss serves "
            f"{', '.join(metrics)}); use --index exact"
        )
    return metrics[comparator]


def _prepare(vectors: np.ndarray, comparator: str) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if comparator == "cos":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


def _to_scores(values: np.ndarray, comparator: str) -> np.ndarray:
    if comparator == "l2":
        return -np.sqrt(np.maximum(values, 0.0))
    if comparator == "l1":
        return -values
    return values


@dataclass
class IndexNote:
    """What an index was built from; a stored index is reused only if this still matches."""

    source: str
    source_size: int
    source_mtime_ns: int
    comparator: str
    nlist: int


class FaissIndex:
    """A faiss index over one table's rows, searched in the comparator's units."""

    def __init__(self, index: Any, comparator: str) -> None:
        self.index = index
        self.comparator = comparator

    @classmethod
    def build(cls, table: ExportedTable, comparator: str, nlist: int, seed: int = 0) -> FaissIndex:
        """`nlist` 0: a flat, exhaustive index; otherwise IVF with `nlist` clusters, trained on
        `nlist * TRAIN_ROWS_PER_LIST` rows drawn with `seed`. Rows are added window by window."""
        faiss = _faiss()
        metric = _metric(comparator)
        if nlist == 0:
            index = faiss.IndexFlat(table.dim, metric)
        else:
            index = faiss.IndexIVFFlat(faiss.IndexFlat(table.dim, metric), table.dim, nlist, metric)
            sample = min(table.num_rows, nlist * TRAIN_ROWS_PER_LIST)
            rows = np.random.default_rng(seed).choice(table.num_rows, sample, replace=False)
            index.train(_prepare(table.rows(np.sort(rows)), comparator))
        for _, window in table.windows():
            index.add(_prepare(window, comparator))
        return cls(index, comparator)

    @classmethod
    def read(cls, path: Path, comparator: str) -> FaissIndex:
        """A saved index, memory-mapped: only the parts a search touches are read."""
        faiss = _faiss()
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
        return cls(faiss.read_index(str(path), flags), comparator)

    def search(
        self, queries: np.ndarray, k: int, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), (q, k) each, best first; rows -1 where fewer than k were found.

        `nprobe`: IVF clusters to search (default nlist/16, at least MIN_NPROBE).
        """
        if self.nlist:
            default = max(MIN_NPROBE, self.nlist // 16)
            self.index.nprobe = min(self.nlist, nprobe if nprobe is not None else default)
        values, rows = self.index.search(_prepare(queries, self.comparator), k)
        return _to_scores(values, self.comparator), rows

    @property
    def nlist(self) -> int:
        return int(getattr(self.index, "nlist", 0))


def default_nlist(rows: int) -> int:
    """0 (flat) for small tables, else about 4 sqrt(rows) clusters, a common IVF choice."""
    return 0 if rows < FLAT_BELOW_ROWS else int(4 * math.sqrt(rows))


def cached_index(
    run: RunDir, table: ExportedTable, comparator: str, nlist: int | None = None
) -> tuple[FaissIndex, Path, bool]:
    """The table's index from `D/index/`, built and saved first when missing or stale.

    Returns (index, its path, whether it was built now).
    """
    faiss = _faiss()
    nlist = default_nlist(table.num_rows) if nlist is None else nlist
    stat = table.path.stat()
    note = IndexNote(str(table.path.resolve()), stat.st_size, stat.st_mtime_ns, comparator, nlist)
    path = run.faiss_index(table.name, comparator)
    note_path = path.with_suffix(".json")
    if path.is_file() and note_path.is_file() and json.loads(note_path.read_text()) == asdict(note):
        return FaissIndex.read(path, comparator), path, False
    index = FaissIndex.build(table, comparator, nlist)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as staging:
        faiss.write_index(index.index, str(staging))
    note_path.write_text(json.dumps(asdict(note)) + "\n")
    return index, path, True

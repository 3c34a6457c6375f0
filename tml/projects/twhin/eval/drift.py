"""How far a table's embeddings moved between two versions of a graph (`compare`, `report`).

Downstream models and ANN indexes are built on last version's vectors, so three questions, each
over the entities present in both versions (matched by name where both exports have names,
else by id: `import_kg --previous` and `synthetic --grow-from` keep ids):

* **neighbour overlap@k**: for a sample of entities, the Jaccard index of their k nearest
  neighbours (cosine, exact search over all shared entities) before and after, averaged. What
  a retrieval user sees; 1 when the neighbourhoods are identical.
* **aligned cosine**: the mean cosine between an entity's two vectors after the orthogonal
  Procrustes rotation that best maps the old space onto the new one. Trained spaces are only
  defined up to rotation, so this asks whether the vectors moved, not whether the axes did;
  1 for a pure rotation.
* **similarity rank correlation**: Spearman's correlation of the cosine similarities of random
  pairs of the sample, before and after: whether the geometry kept its order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tml.projects.twhin.artifacts.embedding_files import RELATIONS_FILE, read_table
from tml.projects.twhin.artifacts.run_dir import RunDir

QUERY_BLOCK = 1024
"""Queries scored at a time in the exact search (a block x shared-rows matrix)."""


@dataclass(frozen=True)
class Drift:
    """The drift of one table between two versions."""

    table: str
    shared: int  # entities in both versions
    sample: int  # entities whose neighbours were compared
    k: int
    overlap_at_k: float
    aligned_cosine: float
    similarity_rank_correlation: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def shared_rows(
    before_names: list[str | None] | None, after_names: list[str | None] | None, before: int,
    after: int,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Rows of the same entities in the two versions: by name where both have names, else the
    ids both versions have."""
    if before_names is None or after_names is None:
        rows = np.arange(min(before, after))
        return rows, rows
    position = {name: row for row, name in enumerate(after_names) if name is not None}
    pairs = [(row, position[name]) for row, name in enumerate(before_names) if name in position]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    old, new = np.asarray(pairs, dtype=np.int64).T
    return old, new


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors.astype(np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def nearest(unit: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The k nearest rows (cosine) of each query row, itself left out; exact, in blocks."""
    found = []
    for start in range(0, len(queries), QUERY_BLOCK):
        block = queries[start : start + QUERY_BLOCK]
        scores = unit[block] @ unit.T
        scores[np.arange(len(block)), block] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < unit.shape[0] else None
        found.append(top if top is not None else np.argsort(-scores, axis=1)[:, :k])
    return np.concatenate(found) if found else np.zeros((0, k), np.int64)


def neighbour_overlap(before: np.ndarray, after: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean Jaccard index of each query's k nearest neighbours in the two spaces."""
    old, new = nearest(_unit(before), queries, k), nearest(_unit(after), queries, k)
    scores = [len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(old, new, strict=True)]
    return float(np.mean(scores)) if scores else float("nan")


def aligned_cosine(before: np.ndarray, after: np.ndarray) -> float:
    """Mean cosine of each row's two vectors after the orthogonal Procrustes rotation that
    maps `before` onto `after` (dims may differ: the rotation is then a partial isometry)."""
    old, new = _unit(before), _unit(after)
    left, _, right = np.linalg.svd(old.T @ new, full_matrices=False)
    rotated = old @ (left @ right)
    cosines = (rotated * new).sum(1) / np.maximum(np.linalg.norm(rotated, axis=1), 1e-12)
    return float(cosines.mean())


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def similarity_rank_correlation(
    before: np.ndarray, after: np.ndarray, rows: np.ndarray, rng: np.random.Generator,
    pairs: int = 20_000,
) -> float:  # fmt: skip
    """Spearman's correlation of the cosine similarities of random pairs of `rows`."""
    first, second = rng.choice(rows, pairs), rng.choice(rows, pairs)
    keep = first != second
    first, second = first[keep], second[keep]
    old, new = _unit(before), _unit(after)
    old_similarity = (old[first] * old[second]).sum(1)
    new_similarity = (new[first] * new[second]).sum(1)
    if len(first) < 2:
        return float("nan")
    return float(np.corrcoef(_ranks(old_similarity), _ranks(new_similarity))[0, 1])


def table_drift(
    table: str, before: np.ndarray, after: np.ndarray, k: int = 10, sample: int = 1000,
    seed: int = 0,
) -> Drift:  # fmt: skip
    """Drift between `before` and `after`, row i the same entity in both (see the module)."""
    if len(before) != len(after):
        raise ValueError(f"table {table!r}: {len(before)} rows before, {len(after)} after")
    if len(before) <= k:
        raise ValueError(f"table {table!r}: {len(before)} shared entities, need more than k={k}")
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(len(before), min(sample, len(before)), replace=False))
    return Drift(
        table=table,
        shared=len(before),
        sample=len(queries),
        k=k,
        overlap_at_k=neighbour_overlap(before, after, queries, k),
        aligned_cosine=aligned_cosine(before, after),
        similarity_rank_correlation=similarity_rank_correlation(before, after, queries, rng),
    )


def _export_dir(path: str | Path) -> Path:
    """A save dir's `embeddings/` folder, or the export folder itself."""
    path = Path(path)
    exported = RunDir.at(path).embeddings
    return exported if exported.is_dir() else path


def exported_tables(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.parquet") if p.name != RELATIONS_FILE)


def compare_exports(
    before: str | Path, after: str | Path, tables: list[str] | None = None, k: int = 10,
    sample: int = 1000, seed: int = 0,
) -> list[Drift]:  # fmt: skip
    """The drift of each table (default: every table both exports hold) from `before` to
    `after` (save dirs or export folders)."""
    old_dir, new_dir = _export_dir(before), _export_dir(after)
    names = tables or [t for t in exported_tables(old_dir) if t in exported_tables(new_dir)]
    if not names:
        raise FileNotFoundError(f"no table exported in both {old_dir} and {new_dir}")
    results = []
    for table in names:
        old, new = read_table(old_dir, table), read_table(new_dir, table)
        old_rows, new_rows = shared_rows(old.names, new.names, len(old.vectors), len(new.vectors))
        results.append(
            table_drift(table, old.vectors[old_rows], new.vectors[new_rows], k, sample, seed)
        )
    return results


def format_drift(results: list[Drift]) -> str:
    """A text table: one line per table."""
    k = results[0].k if results else 10
    lines = [
        f"{'table':<16} {'shared':>9} {'sample':>7} {f'overlap@{k}':>11} {'aligned cos':>12} "
        f"{'sim. rank corr':>15}"
    ]
    for d in results:
        lines.append(
            f"{d.table:<16} {d.shared:>9,} {d.sample:>7,} {d.overlap_at_k:>11.3f} "
            f"{d.aligned_cosine:>12.3f} {d.similarity_rank_correlation:>15.3f}"
        )
    return "\n".join(lines)

"""`import_kg --previous DIR`: the next version of a graph keeps every id of the last one.

The previous import's `vocab/<table>.parquet` and `relations.parquet` seed the vocabulary in id
order, so every name keeps its id (and every relation its id and table pair); names seen for the
first time get the next ids of their table. A name of the previous version that no new edge
mentions keeps its row: the model's table must not shrink (a warm start refuses it) and the
entity can come back. The summary counts such absent names per table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tml.projects.twhin.data.graph_files import VOCAB_DIR
from tml.projects.twhin.tools.import_kg.errors import KgImportError
from tml.projects.twhin.tools.import_kg.vocabulary import DEFAULT_TABLE, Relation, Vocabulary

RELATIONS_FILE = "relations.parquet"


def _read(path: Path, columns: list[str]) -> dict[str, list]:
    if not path.is_file():
        raise KgImportError(f"--previous: {path} does not exist (not an import_kg output?)")
    return pq.read_table(path, columns=columns).to_pydict()


def seed_vocabulary(vocabulary: Vocabulary, previous: Path) -> None:
    """Fill `vocabulary` (still empty) with the previous import's names, ids and relations."""
    relations = _read(previous / RELATIONS_FILE, ["id", "name", "lhs", "rhs"])
    tables = sorted(p.stem for p in (previous / VOCAB_DIR).glob("*.parquet"))
    order = list(dict.fromkeys([*relations["lhs"], *relations["rhs"], *tables]))
    if vocabulary.types is None and order != [DEFAULT_TABLE]:
        raise KgImportError(
            f"--previous {previous} has typed tables ({', '.join(order)}); give --types too"
        )
    for table in order:
        data = _read(previous / VOCAB_DIR / f"{table}.parquet", ["id", "name"])
        if data["id"] != list(range(len(data["id"]))):
            raise KgImportError(f"--previous: {previous / VOCAB_DIR / table}.parquet: ids are "
                                "not 0..n-1 in order")  # fmt: skip
        vocabulary.tables[table] = {name: i for i, name in enumerate(data["name"])}
        if vocabulary.types is not None:
            for name in data["name"]:
                if vocabulary.types.get(name, table) != table:
                    raise KgImportError(
                        f"{vocabulary.types_path}: {name!r} has type "
                        f"{vocabulary.types[name]!r} but {table!r} in --previous {previous}"
                    )
                vocabulary.types.setdefault(name, table)
    where = f"--previous {previous}"
    for index, name in enumerate(relations["name"]):
        if relations["id"][index] != index:
            raise KgImportError(f"--previous: {previous / RELATIONS_FILE}: ids not in order")
        vocabulary.relations[name] = index
        vocabulary.relation_names.append(name)
        lhs, rhs = order.index(relations["lhs"][index]), order.index(relations["rhs"][index])
        vocabulary.relation_info.append(Relation(name, lhs, rhs, where))


class Presence:
    """Which ids of each table the new edges mention (for the absent-names count)."""

    def __init__(self) -> None:
        self.seen: dict[int, np.ndarray] = {}  # table index -> bool per id

    def mark(
        self, vocabulary: Vocabulary, lhs: np.ndarray, rel: np.ndarray, rhs: np.ndarray
    ) -> None:
        infos = vocabulary.relation_info
        lhs_table = np.array([info.lhs for info in infos], dtype=np.int64)[rel]
        rhs_table = np.array([info.rhs for info in infos], dtype=np.int64)[rel]
        for ids, tables in ((lhs, lhs_table), (rhs, rhs_table)):
            for table in np.unique(tables).tolist():
                mine = ids[tables == table]
                seen = self.seen.setdefault(table, np.zeros(0, bool))
                if len(mine) and mine.max() >= len(seen):
                    seen = np.concatenate([seen, np.zeros(mine.max() + 1 - len(seen), bool)])
                seen[mine] = True
                self.seen[table] = seen

    def absent(self, vocabulary: Vocabulary, previous_sizes: dict[str, int]) -> dict[str, int]:
        """table -> names of the previous version that no new edge mentions."""
        absent = {}
        for index, table in enumerate(vocabulary.tables):
            size = previous_sizes.get(table, 0)
            seen = self.seen.get(index, np.zeros(0, bool))[:size]
            absent[table] = int(size - seen.sum())
        return absent

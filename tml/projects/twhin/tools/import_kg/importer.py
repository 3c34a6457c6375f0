"""The import itself: check the arguments, read, encode, write, configure, publish.

Reading goes through the `reading` module's attributes, so tests can wrap `reading.read_rows`.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from tml.core.files import built_directory, check_out_dir
from tml.projects.twhin.data.graph_files import VOCAB_DIR
from tml.projects.twhin.models.operators import OPERATORS
from tml.projects.twhin.tools.import_kg import reading
from tml.projects.twhin.tools.import_kg.config_file import (
    build_config,
    command_line,
    config_header,
    write_config,
)
from tml.projects.twhin.tools.import_kg.errors import KgImportError
from tml.projects.twhin.tools.import_kg.previous import Presence, seed_vocabulary
from tml.projects.twhin.tools.import_kg.reading import DEFAULT_BLOCK_SIZE, EDGE_COLUMNS
from tml.projects.twhin.tools.import_kg.vocabulary import Vocabulary
from tml.projects.twhin.tools.import_kg.writing import (
    edge_writer,
    write_relations,
    write_vocabularies,
)

SPLITS: tuple[str, ...] = ("train", "valid", "test")


def _check_arguments(operator: str, dim: int, delimiter: str, block_size: int) -> None:
    try:
        OPERATORS.check(operator)
    except ValueError as exc:
        raise KgImportError(str(exc)) from None
    if dim < 1:
        raise KgImportError(f"dim must be >= 1, got {dim}")
    problem = OPERATORS[operator].dimension_problem(dim, dim)
    if problem:
        raise KgImportError(f"--dim {dim}: {problem}")
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise KgImportError(
            f"delimiter must be one character such as TAB or ',', got {delimiter!r}"
        )
    if block_size < 1:
        raise KgImportError(f"block_size must be >= 1, got {block_size}")


def import_kg(
    train: str | os.PathLike[str],
    valid: str | os.PathLike[str] | None = None,
    test: str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str],
    operator: str = "translation",
    dim: int = 64,
    types: str | os.PathLike[str] | None = None,
    delimiter: str = "\t",
    header: bool = False,
    overwrite: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    previous: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Import (head, relation, tail) text files into ``out``; return the summary.

    With ``previous`` (an earlier import's output), every name and relation keeps its id there
    and new names get the next ids (previous.py).

    Raises `KgImportError` for unusable input (naming the file and line) and
    `OutputExistsError` when ``out`` is non-empty and ``overwrite`` is false; nothing is written
    to ``out`` unless the whole import succeeds.
    """
    _check_arguments(operator, dim, delimiter, block_size)
    out_dir = Path(os.path.abspath(out))
    check_out_dir(out_dir, overwrite)
    given = {"train": train, "valid": valid, "test": test}
    files = {split: os.path.abspath(path) for split, path in given.items() if path is not None}
    types_path = os.path.abspath(types) if types is not None else None
    type_map = reading.read_types(types_path, delimiter, header, block_size) if types_path else None
    vocabulary = Vocabulary(type_map, types_path)
    if previous is not None:
        seed_vocabulary(vocabulary, Path(os.path.abspath(previous)))
    previous_sizes = {table: len(names) for table, names in vocabulary.tables.items()}
    presence = Presence()

    with built_directory(out_dir, overwrite) as tmp:
        edges: dict[str, int] = {}
        for split, path in files.items():
            writer = edge_writer(tmp / split)
            for rows in reading.read_rows(path, EDGE_COLUMNS, delimiter, header, block_size):
                ids = vocabulary.encode(path, rows, split)
                presence.mark(vocabulary, *ids)
                writer.append(*ids)
            writer.close()
            edges[split] = writer.num_rows
        if edges["train"] == 0:
            raise KgImportError(f"{files['train']}: no edges to train on")
        write_vocabularies(tmp / VOCAB_DIR, vocabulary)
        write_relations(tmp / "relations.parquet", vocabulary)
        command = command_line(files, out_dir, operator, dim, types_path, delimiter, header)
        if previous is not None:
            command += f" --previous {shlex.quote(os.path.abspath(previous))}"
        config = build_config(out_dir, vocabulary, edges, operator, dim)
        header_lines = config_header(out_dir, files, types_path, command)
        write_config(tmp / "config.yaml", config, header_lines)
    return {
        "out": str(out_dir),
        "config": str(out_dir / "config.yaml"),
        "tables": {table: len(names) for table, names in vocabulary.tables.items()},
        "relations": len(vocabulary.relation_info),
        "edges": edges,
        **({"previous": {"path": os.path.abspath(previous), "tables": previous_sizes,
                         "absent": presence.absent(vocabulary, previous_sizes)}}
           if previous is not None else {}),
    }  # fmt: skip


def format_summary(summary: dict[str, Any]) -> str:
    """The CLI's one line: entities per table, relations, edges per split, where."""
    tables = ", ".join(f"{table} {size}" for table, size in summary["tables"].items())
    edges = ", ".join(f"{split} {count}" for split, count in summary["edges"].items())
    line = (
        f"imported {summary['out']}: entities: {tables}; relations: {summary['relations']}; "
        f"edges: {edges}; config: {summary['config']}"
    )
    if "previous" in summary:
        before = summary["previous"]
        grown = ", ".join(
            f"{table} +{summary['tables'][table] - before['tables'].get(table, 0)} new, "
            f"{before['absent'].get(table, 0)} absent from the new edges"
            for table in summary["tables"]
        )
        line += f"; ids kept from {before['path']}: {grown}"
    return line

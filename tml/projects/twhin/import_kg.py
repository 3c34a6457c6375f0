"""Import a knowledge graph of named triples into tml-twhin's parquet edges and a runnable config.

Public KG benchmarks (and most real exports) come as text files of ``head, relation, tail`` names,
while the trainer reads integer ``lhs, rel, rhs`` rows. This tool assigns the ids, keeps the
mapping so embeddings can be read back by name, and writes a config sized to the vocabulary.

Usage::

    python -m tml.projects.twhin.import_kg --train T [--valid V] [--test S] --out DIR
        [--operator NAME] [--dim D] [--types FILE] [--delimiter TAB|COMMA] [--header]
        [--overwrite]

Output under DIR (written to a temporary directory, then renamed into place):

* ``train/``, ``valid/``, ``test/``: ``part-NNNNN.parquet`` with int64 columns ``lhs``, ``rel``,
  ``rhs`` (``rel`` indexes ``model.relations``);
* ``vocab/<table>.parquet``: ``id`` (int64), ``name`` (string), one file per entity table;
* ``relations.parquet``: ``id``, ``name``, ``lhs``, ``rhs`` (table names), ``count`` (train edges);
* ``config.yaml``: a training config that validates against ``TwhinConfig``.

Ids follow the first appearance of a name over train, then valid, then test (heads before tails
within a row), so the same files always give the same ids. The input is streamed in blocks; memory
grows with the vocabulary, not with the number of edges.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from tml.core.config import ConfigError, load_config
from tml.core.training_config import TrainingConfig
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.synthetic import OutputExistsError
from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.models.operators import OPERATORS

DEFAULT_TABLE = "entity"
SPLITS: tuple[str, ...] = ("train", "valid", "test")
EDGE_COLUMNS: tuple[str, ...] = ("head", "relation", "tail")
TYPE_COLUMNS: tuple[str, ...] = ("name", "type")
DELIMITERS: dict[str, str] = {"TAB": "\t", "COMMA": ","}

DEFAULT_BLOCK_SIZE = 1 << 20
"""Bytes of text parsed at a time (a line must fit in one). pyarrow reads up to 32 blocks ahead,
so this bounds the memory held by edges in flight; larger blocks were not faster."""
ROW_GROUP_SIZE = 65_536
"""Edges per parquet row group: the trainer shuffles row groups, so smaller mixes better."""
ROWS_PER_FILE = 64 * ROW_GROUP_SIZE

EDGE_SCHEMA = pa.schema([("lhs", pa.int64()), ("rel", pa.int64()), ("rhs", pa.int64())])
VOCAB_SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
RELATION_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("lhs", pa.string()),
        ("rhs", pa.string()),
        ("count", pa.int64()),
    ]
)
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "snappy", "write_statistics": True}

# Table names become file names (vocab/<table>.parquet, the export's embeddings/<table>.parquet).
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# The trainer's export writes embeddings/relations.parquet next to the tables' files.
_RESERVED_TABLE_NAMES = frozenset({"relations"})


class _FlowMap(dict):
    """A mapping written on one line, as configs/local.yaml writes relations and optimizers."""


class _ConfigDumper(yaml.SafeDumper):
    """SafeDumper that writes `_FlowMap`s in flow style and repeats shared blocks in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_ConfigDumper.add_representer(
    _FlowMap,
    lambda dumper, data: dumper.represent_mapping(
        "tag:yaml.org,2002:map", data.items(), flow_style=True
    ),
)


class KgImportError(ValueError):
    """Input that cannot be imported; the message names the file and, for rows, the line."""


def default_training_settings(
    num_train_edges: int, num_entities: int, operator: str = "translation"
) -> dict[str, Any]:
    """Starting hyperparameters for an imported graph, the one place to tune them.

    Keys are config field names: training fields go to ``training``, data fields to both
    ``train_data`` and ``validation_data``, model fields (``translation_optimizer``, ``loss``…)
    to ``model``; ``table_optimizer`` is every table's optimizer block. Cadences count steps of
    a 1-rank run.
    """
    # About 16 steps per epoch on small graphs; 1000-edge batches on large ones.
    batch_size = min(1000, max(64, num_train_edges // 16))
    steps_per_epoch = max(1, math.ceil(num_train_edges / batch_size))
    # Small graphs need many passes; large ones learn most in a few.
    num_epochs = 60 if num_train_edges <= 100_000 else 20 if num_train_edges <= 1_000_000 else 5
    total_steps = steps_per_epoch * num_epochs
    # Picked on Kinships' validation split (see README, "Quality"): a short warm-up, then a
    # cosine decay to 1/50 of the peak keeps the fast early progress of a high rate without
    # the overfitting that follows it.
    peak = 0.2
    schedule = {
        "linear_ramp_to_cosine": {
            "learning_rate": peak,
            "final_learning_rate": peak / 50,
            "num_ramp_steps": steps_per_epoch,
            "final_num_steps": max(total_steps, steps_per_epoch + 1),
        }
    }
    optimizer = {"adagrad": {"lr": peak}, "learning_rate": schedule}
    return {
        "per_replica_batch_size": batch_size,
        # Uniform negatives scored by one matrix product; more than the entities would repeat.
        "global_negatives": max(1, min(100, num_entities)),
        "in_batch_negatives": 0,
        "loss": "softmax",
        "regularization": 0.02,
        # A reverse operator for head prediction lifted DistMult from 0.50 to 0.63 and ComplEx
        # from 0.81 to 0.82 on Kinships; it lowered TransE, so translation keeps one operator.
        "reciprocal_relations": operator != "translation",
        "table_optimizer": optimizer,
        "translation_optimizer": optimizer,
        "num_epochs": num_epochs,
        # Let the epochs end the run, not the trainer's default step cap.
        "num_train_steps": total_steps,
        "checkpoint_every_n": steps_per_epoch * 10,
        "checkpoint_max_to_keep": 3,
        "train_log_every_n": steps_per_epoch,
        "eval_log_every_n": steps_per_epoch * 10,
        "num_eval_steps": -1,
    }


# -- reading ------------------------------------------------------------------------------------


@dataclass
class _Rows:
    """One parsed block of a text file: its string columns and the line of its first row."""

    columns: list[pa.Array]
    first_line: int

    def __len__(self) -> int:
        return len(self.columns[0])


def _read_rows(
    path: str, names: Sequence[str], delimiter: str, header: bool, block_size: int
) -> Iterator[_Rows]:
    """Stream a delimited file as string columns, rejecting bad rows with file and line.

    Every physical line is one row (empty lines are kept, quoted newlines refused), so a row's
    line number is its position in the stream. pyarrow reports rows of the wrong width with
    their line while parsing a block, before that block's rows reach us, so such a row is
    skipped, remembered, and reported once every row above it has been checked: the error
    always names the first bad line.
    """
    if not os.path.isfile(path):
        raise KgImportError(f"{path}: no such file")
    skip = 1 if header else 0
    invalid: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        if not invalid:
            invalid.append(row)
        return "skip"

    read_options = pacsv.ReadOptions(
        column_names=list(names), skip_rows=skip, block_size=block_size, use_threads=False
    )
    parse_options = pacsv.ParseOptions(
        delimiter=delimiter,
        # TSV names may hold quotes literally; CSV needs quoting for names with commas.
        quote_char='"' if delimiter == "," else False,
        newlines_in_values=False,
        ignore_empty_lines=False,
        invalid_row_handler=on_invalid,
    )
    convert_options = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in names},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    line = skip + 1  # line of the next row to arrive
    try:
        try:
            reader = pacsv.open_csv(
                path,
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
        except pa.ArrowInvalid as exc:
            if str(exc).startswith("Empty CSV file"):
                return
            raise
        for batch in reader:
            rows = _Rows([batch.column(i) for i in range(len(names))], line)
            # Rows below a skipped line arrive one line early: stop checking at that line.
            good = _lines_before_invalid(invalid, line)
            _check_not_empty(path, rows, names, min(len(rows), good))
            if good <= len(rows):
                raise _invalid_row_error(path, invalid[0], names)
            if len(rows):
                yield rows
            line += len(rows)
        if invalid:
            raise _invalid_row_error(path, invalid[0], names)
    except pa.ArrowInvalid as exc:
        if "straddling" in str(exc):
            raise KgImportError(
                f"{path}: a line after line {line - 1} is too long for the block size "
                f"({block_size} bytes)"
            ) from None
        raise KgImportError(f"{path}: {exc}") from None


def _lines_before_invalid(invalid: list[pacsv.InvalidRow], line: int) -> int | float:
    """How many rows from `line` on are numbered right: all of them until a line was skipped."""
    if not invalid:
        return math.inf
    number = invalid[0].number
    return number - line if number is not None else 0


def _invalid_row_error(path: str, row: pacsv.InvalidRow, names: Sequence[str]) -> KgImportError:
    where = f"line {row.number}" if row.number is not None else "a line"
    return KgImportError(
        f"{path}: {where}: expected {row.expected_columns} fields ({', '.join(names)}), "
        f"got {row.actual_columns}: {row.text.rstrip()!r}"
    )


def _check_not_empty(path: str, rows: _Rows, names: Sequence[str], count: int) -> None:
    """Reject empty or blank fields in the first `count` rows: they would silently become an
    entity or relation named ''."""
    for name, column in zip(names, rows.columns, strict=True):
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column.slice(0, count))), 0)
        if pc.any(blank).as_py():
            index = int(np.flatnonzero(blank.to_numpy(zero_copy_only=False))[0])
            values = " | ".join(repr(c[index].as_py()) for c in rows.columns)
            raise KgImportError(
                f"{path}: line {rows.first_line + index}: empty {name} field ({values})"
            )


def _read_types(path: str, delimiter: str, header: bool, block_size: int) -> dict[str, str]:
    """Entity name -> type (its table); a name given two different types is an error."""
    types: dict[str, str] = {}
    checked: set[str] = set()
    for rows in _read_rows(path, TYPE_COLUMNS, delimiter, header, block_size):
        names, kinds = (column.to_pylist() for column in rows.columns)
        for offset, (name, kind) in enumerate(zip(names, kinds, strict=True)):
            where = f"{path}: line {rows.first_line + offset}"
            if kind not in checked:
                problem = _table_name_problem(kind)
                if problem:
                    raise KgImportError(f"{where}: {problem}")
                checked.add(kind)
            known = types.setdefault(name, kind)
            if known != kind:
                raise KgImportError(
                    f"{where}: {name!r} has type {kind!r} but an earlier line gave {known!r}"
                )
    return types


def _table_name_problem(name: str) -> str | None:
    if name in _RESERVED_TABLE_NAMES:
        return f"type {name!r} is reserved (the export writes embeddings/{name}.parquet)"
    if not _TABLE_NAME.match(name):
        return (
            f"type {name!r} cannot name a table: use letters, digits, '_', '.', '-' "
            "(it becomes a file name)"
        )
    return None


# -- ids ----------------------------------------------------------------------------------------


@dataclass
class _Relation:
    name: str
    lhs: int  # table index
    rhs: int
    where: str  # "file: line N" of the row that fixed lhs/rhs
    count: int = 0  # train edges


@dataclass
class _Vocabulary:
    """Names -> dense ids per table and per relation, in order of first appearance."""

    types: dict[str, str] | None
    types_path: str | None
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    relations: dict[str, int] = field(default_factory=dict)
    relation_names: list[str] = field(default_factory=list)
    relation_info: list[_Relation] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.types is None:
            self.tables[DEFAULT_TABLE] = {}

    def encode(self, path: str, rows: _Rows, split: str) -> tuple[np.ndarray, ...]:
        """(lhs, rel, rhs) ids of a block, growing the vocabularies with its new names."""
        heads, relations, tails = rows.columns
        n = len(rows)
        rel = self._relation_ids(relations)
        # Interleave heads and tails so dictionary order is first appearance, head before tail.
        order = np.empty(2 * n, dtype=np.int64)
        order[0::2] = np.arange(n)
        order[1::2] = np.arange(n) + n
        both = pa.concat_arrays([heads, tails]).take(pa.array(order))
        encoded = both.dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        entity_id, entity_table = self._entity_ids(encoded.dictionary)
        head_codes, tail_codes = codes[0::2], codes[1::2]
        lhs, rhs = entity_id[head_codes], entity_id[tail_codes]
        self._check_sides(path, rows, rel, entity_table[head_codes], entity_table[tail_codes])
        if split == "train":
            counts = np.bincount(rel, minlength=len(self.relation_info))
            for info, count in zip(self.relation_info, counts.tolist(), strict=True):
                info.count += count
        return lhs, rel, rhs

    def _relation_ids(self, relations: pa.Array) -> np.ndarray:
        encoded = relations.dictionary_encode()
        lookup = np.empty(len(encoded.dictionary), dtype=np.int64)
        for code, name in enumerate(encoded.dictionary.to_pylist()):
            if name not in self.relations:
                self.relations[name] = len(self.relation_names)
                self.relation_names.append(name)
            lookup[code] = self.relations[name]
        return lookup[encoded.indices.to_numpy(zero_copy_only=False)]

    def _entity_ids(self, dictionary: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Id and table index of each name of a block's dictionary (-1 for a name without type)."""
        ids = np.empty(len(dictionary), dtype=np.int64)
        tables = np.empty(len(dictionary), dtype=np.int64)
        table_index = {table: index for index, table in enumerate(self.tables)}
        for code, name in enumerate(dictionary.to_pylist()):
            if self.types is None:
                table = DEFAULT_TABLE
            else:
                table = self.types.get(name)
                if table is None:  # reported by _check_sides, in line order with its problems
                    ids[code] = tables[code] = -1
                    continue
                if table not in self.tables:
                    table_index[table] = len(self.tables)
                    self.tables[table] = {}
            vocab = self.tables[table]
            ids[code] = vocab.setdefault(name, len(vocab))
            tables[code] = table_index[table]
        return ids, tables

    def _check_sides(
        self, path: str, rows: _Rows, rel: np.ndarray, lhs: np.ndarray, rhs: np.ndarray
    ) -> None:
        """Every entity has a type, and each relation joins one (lhs table, rhs table) pair: the
        trainer has one pair per relation. Reports the first offending line of the block."""
        # New relations of this block have the next ids, so ascending order appends them in order.
        relations, first_rows = np.unique(rel, return_index=True)
        for relation, row in zip(relations.tolist(), first_rows.tolist(), strict=True):
            if relation == len(self.relation_info):
                where = f"{path}: line {rows.first_line + row}"
                name = self.relation_names[relation]
                self.relation_info.append(_Relation(name, int(lhs[row]), int(rhs[row]), where))
        expected_lhs = np.array([info.lhs for info in self.relation_info], dtype=np.int64)
        expected_rhs = np.array([info.rhs for info in self.relation_info], dtype=np.int64)
        untyped = (lhs < 0) | (rhs < 0)
        bad = untyped | (expected_lhs[rel] != lhs) | (expected_rhs[rel] != rhs)
        if not bad.any():
            return
        row = int(np.flatnonzero(bad)[0])
        where = f"{path}: line {rows.first_line + row}"
        if untyped[row]:
            column = rows.columns[0] if lhs[row] < 0 else rows.columns[2]
            raise KgImportError(
                f"{where}: entity {column[row].as_py()!r} has no type in {self.types_path}"
            )
        info = self.relation_info[int(rel[row])]
        table_names = list(self.tables)
        raise KgImportError(
            f"{where}: relation {info.name!r} joins {table_names[int(lhs[row])]} -> "
            f"{table_names[int(rhs[row])]} here but {table_names[info.lhs]} -> "
            f"{table_names[info.rhs]} at {info.where}; a relation must connect one pair of types"
        )


# -- writing ------------------------------------------------------------------------------------


class _EdgeWriter:
    """Edges into ``part-NNNNN.parquet`` files of fixed-size row groups.

    Row groups and files are cut by edge count, never by input block, so the bytes written do not
    depend on how the text was chunked; at most one row group is buffered.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.num_rows = 0
        self._num_files = 0
        self._rows_in_file = 0
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._buffered = 0
        directory.mkdir()

    def append(self, lhs: np.ndarray, rel: np.ndarray, rhs: np.ndarray) -> None:
        start = 0
        while start < len(lhs):
            take = min(len(lhs) - start, ROW_GROUP_SIZE - self._buffered)
            stop = start + take
            self._buffer.append((lhs[start:stop], rel[start:stop], rhs[start:stop]))
            self._buffered += take
            start = stop
            if self._buffered == ROW_GROUP_SIZE:
                self._write_row_group()

    def close(self) -> None:
        """Write what is left; an empty split still gets one (empty) file with the schema."""
        if self._buffered or self._num_files == 0:
            self._write_row_group()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write_row_group(self) -> None:
        empty = np.zeros(0, dtype=np.int64)
        arrays = [
            pa.array(np.concatenate([empty] + [part[i] for part in self._buffer]), pa.int64())
            for i in range(3)
        ]
        if self._writer is None:
            path = self.directory / f"part-{self._num_files:05d}.parquet"
            self._writer = pq.ParquetWriter(path, EDGE_SCHEMA, **_PARQUET_OPTIONS)
            self._num_files += 1
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=EDGE_SCHEMA))
        self.num_rows += self._buffered
        self._rows_in_file += self._buffered
        self._buffer, self._buffered = [], 0
        if self._rows_in_file >= ROWS_PER_FILE:
            self._writer.close()
            self._writer = None
            self._rows_in_file = 0


def _write_vocabularies(directory: Path, vocabulary: _Vocabulary) -> None:
    directory.mkdir()
    for table, names in vocabulary.tables.items():
        ids = pa.array(np.arange(len(names), dtype=np.int64))
        table_data = pa.Table.from_arrays(
            [ids, pa.array(list(names), pa.string())], schema=VOCAB_SCHEMA
        )
        pq.write_table(table_data, directory / f"{table}.parquet", **_PARQUET_OPTIONS)


def _write_relations(path: Path, vocabulary: _Vocabulary) -> None:
    tables = list(vocabulary.tables)
    infos = vocabulary.relation_info
    arrays = [
        pa.array(range(len(infos)), pa.int64()),
        pa.array([info.name for info in infos], pa.string()),
        pa.array([tables[info.lhs] for info in infos], pa.string()),
        pa.array([tables[info.rhs] for info in infos], pa.string()),
        pa.array([info.count for info in infos], pa.int64()),
    ]
    pq.write_table(pa.Table.from_arrays(arrays, schema=RELATION_SCHEMA), path, **_PARQUET_OPTIONS)


def _build_config(
    out: Path,
    vocabulary: _Vocabulary,
    edges: dict[str, int],
    operator: str,
    dim: int,
) -> dict[str, Any]:
    """The training config as a dict: tables and relations from the vocabulary, the rest from
    `default_training_settings`, routed to the section that owns each field."""
    num_entities = sum(len(names) for names in vocabulary.tables.values())
    settings = default_training_settings(edges["train"], num_entities, operator)
    table_optimizer = _flow_blocks(settings.pop("table_optimizer"))
    training: dict[str, Any] = {"save_dir": f"runs/{out.name}"}
    data: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for key, value in settings.items():
        if key in TrainingConfig.model_fields:
            training[key] = value
        elif key in TwhinDataConfig.model_fields:
            data[key] = value
        elif key in TwhinModelConfig.model_fields and key not in ("embeddings", "relations"):
            model[key] = _flow_blocks(value) if isinstance(value, dict) else value
        else:
            raise KgImportError(
                f"default_training_settings returned {key!r}, which is not a field of the "
                "training, data or model config sections"
            )
    tables = [
        {
            "name": table,
            "num_embeddings": len(names),
            "embedding_dim": dim,
            "optimizer": table_optimizer,
        }
        for table, names in vocabulary.tables.items()
    ]
    table_names = list(vocabulary.tables)
    relations = [
        _FlowMap(
            name=info.name, lhs=table_names[info.lhs], rhs=table_names[info.rhs], operator=operator
        )
        for info in vocabulary.relation_info
    ]
    config: dict[str, Any] = {
        "training": training,
        "model": {"embeddings": {"tables": tables}, "relations": relations, **model},
        "train_data": {"data_root": str(out / "train"), **data},
    }
    if edges.get("valid"):
        config["validation_data"] = {"data_root": str(out / "valid"), **data}
    if edges.get("test"):
        config["test_data"] = {"data_root": str(out / "test"), **data}
    return config


def _flow_blocks(optimizer: dict[str, Any]) -> dict[str, Any]:
    """Optimizer block with each algorithm or schedule on one line (`adagrad: {lr: 0.1}`)."""
    return {
        key: _FlowMap(value) if isinstance(value, dict) else value
        for key, value in optimizer.items()
    }


def _config_header(out: Path, files: dict[str, str], types: str | None, command: str) -> list[str]:
    dataset = Path(files["train"]).parent.name or "graph"
    lines = [
        f"Training config for the {dataset} knowledge graph, imported from:",
        *(f"  {split}: {path}" for split, path in files.items()),
    ]
    if types:
        lines.append(f"  types: {types}")
    lines += [
        f"Generated by: {command}",
        f"Ids: {out}/vocab/<table>.parquet (id, name); relations: {out}/relations.parquet.",
        "Batch size, negatives, optimizers and cadences come from",
        "tml.projects.twhin.import_kg.default_training_settings; edit freely.",
    ]
    if "test" in files:
        lines.append(
            "test_data is not trained on; score it with "
            "`python -m tml.projects.twhin.evaluate --save_dir D --split test`."
        )
    return [f"# {line}" for line in lines]


def _write_config(path: Path, config: dict[str, Any], header: list[str]) -> None:
    """Write the config and load it back, so an invalid config is never published."""
    text = "\n".join(header) + "\n" + yaml.dump(config, Dumper=_ConfigDumper, sort_keys=False)
    path.write_text(text)
    try:
        load_config(TwhinConfig, path)
    except ConfigError as exc:
        raise KgImportError(f"the generated config does not validate: {exc}") from None


def _command_line(
    files: dict[str, str],
    out: Path,
    operator: str,
    dim: int,
    types: str | None,
    delimiter: str,
    header: bool,
) -> str:
    words = ["python", "-m", "tml.projects.twhin.import_kg"]
    for split, path in files.items():
        words += [f"--{split}", path]
    words += ["--out", str(out), "--operator", operator, "--dim", str(dim)]
    if types:
        words += ["--types", types]
    flag = next((name for name, char in DELIMITERS.items() if char == delimiter), delimiter)
    words += ["--delimiter", flag]
    if header:
        words.append("--header")
    return shlex.join(words)


# -- the import ---------------------------------------------------------------------------------


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"output path {out} exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise OutputExistsError(
                f"output directory {out} is not empty; pass --overwrite to replace it"
            )


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished directory into place so readers never see a partial import."""
    _check_out_dir(out, overwrite)
    if out.is_dir():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, trash / "old")
        os.rename(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, out)


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
) -> dict[str, Any]:
    """Import (head, relation, tail) text files into ``out``; return the summary.

    Raises `KgImportError` for unusable input (naming the file and line) and
    `OutputExistsError` when ``out`` is non-empty and ``overwrite`` is false; nothing is written
    to ``out`` unless the whole import succeeds.
    """
    _check_arguments(operator, dim, delimiter, block_size)
    out_dir = Path(os.path.abspath(out))
    _check_out_dir(out_dir, overwrite)
    given = {"train": train, "valid": valid, "test": test}
    files = {split: os.path.abspath(path) for split, path in given.items() if path is not None}
    types_path = os.path.abspath(types) if types is not None else None
    type_map = _read_types(types_path, delimiter, header, block_size) if types_path else None
    vocabulary = _Vocabulary(type_map, types_path)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 mode would survive the rename; mkdir honours the umask.
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        edges: dict[str, int] = {}
        for split, path in files.items():
            writer = _EdgeWriter(tmp / split)
            for rows in _read_rows(path, EDGE_COLUMNS, delimiter, header, block_size):
                writer.append(*vocabulary.encode(path, rows, split))
            writer.close()
            edges[split] = writer.num_rows
        if edges["train"] == 0:
            raise KgImportError(f"{files['train']}: no edges to train on")
        _write_vocabularies(tmp / "vocab", vocabulary)
        _write_relations(tmp / "relations.parquet", vocabulary)
        command = _command_line(files, out_dir, operator, dim, types_path, delimiter, header)
        config = _build_config(out_dir, vocabulary, edges, operator, dim)
        header_lines = _config_header(out_dir, files, types_path, command)
        _write_config(tmp / "config.yaml", config, header_lines)
        _publish(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "out": str(out_dir),
        "config": str(out_dir / "config.yaml"),
        "tables": {table: len(names) for table, names in vocabulary.tables.items()},
        "relations": len(vocabulary.relation_info),
        "edges": edges,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The CLI's one line: entities per table, relations, edges per split, where."""
    tables = ", ".join(f"{table} {size}" for table, size in summary["tables"].items())
    edges = ", ".join(f"{split} {count}" for split, count in summary["edges"].items())
    return (
        f"imported {summary['out']}: entities: {tables}; relations: {summary['relations']}; "
        f"edges: {edges}; config: {summary['config']}"
    )


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tml.projects.twhin.import_kg",
        description="Import a knowledge graph of (head, relation, tail) names into parquet "
        "edges, id vocabularies and a runnable training config.",
    )
    p.add_argument("--train", required=True, metavar="FILE", help="training triples")
    p.add_argument("--valid", metavar="FILE", help="validation triples (optional)")
    p.add_argument("--test", metavar="FILE", help="test triples (optional)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory to create")
    p.add_argument(
        "--operator",
        default="translation",
        help=f"relation operator of every relation (default: translation; one of "
        f"{', '.join(OPERATORS)})",
    )
    p.add_argument("--dim", type=int, default=64, help="embedding dimension (default: 64)")
    p.add_argument(
        "--types",
        metavar="FILE",
        help="name<delimiter>type per line: one table per type (default: one table 'entity')",
    )
    p.add_argument(
        "--delimiter",
        type=str.upper,
        choices=sorted(DELIMITERS),
        default="TAB",
        help='field separator of all input files (default: TAB; COMMA allows "quoted" names)',
    )
    p.add_argument("--header", action="store_true", help="skip the first line of every input file")
    p.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it exists and is not empty"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit code 2 with one `error:` line on bad input or existing output."""
    args = _build_parser().parse_args(argv)
    try:
        summary = import_kg(
            args.train,
            args.valid,
            args.test,
            out=args.out,
            operator=args.operator,
            dim=args.dim,
            types=args.types,
            delimiter=DELIMITERS[args.delimiter],
            header=args.header,
            overwrite=args.overwrite,
        )
    except (KgImportError, OutputExistsError) as exc:
        message = " ".join(str(exc).split("\n"))
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Text input: delimited rows of names streamed in blocks, and the optional types file.

Everything that can be wrong with a single row (width, empty fields, a line too long, a bad type
name) is caught here, so the error can name the file and line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tml.projects.twhin.tools.import_kg.errors import KgImportError

EDGE_COLUMNS: tuple[str, ...] = ("head", "relation", "tail")
TYPE_COLUMNS: tuple[str, ...] = ("name", "type")
DELIMITERS: dict[str, str] = {"TAB": "\t", "COMMA": ","}

DEFAULT_BLOCK_SIZE = 1 << 20
"""Bytes of text parsed at a time (a line must fit in one). pyarrow reads up to 32 blocks ahead,
so this bounds the memory held by edges in flight; larger blocks were not faster."""

# Table names become file names (vocab/<table>.parquet, the export's embeddings/<table>.parquet).
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# The trainer's export writes embeddings/relations.parquet next to the tables' files.
_RESERVED_TABLE_NAMES = frozenset({"relations"})


@dataclass
class Rows:
    """One parsed block of a text file: its string columns and the line of its first row."""

    columns: list[pa.Array]
    first_line: int

    def __len__(self) -> int:
        return len(self.columns[0])


def read_rows(
    path: str, names: Sequence[str], delimiter: str, header: bool, block_size: int
) -> Iterator[Rows]:
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
            rows = Rows([batch.column(i) for i in range(len(names))], line)
            # Rows below a skipped line arrive one line early: stop checking at that line.
            good = _lines_before_invalid(invalid, line)
            _check_not_empty(path, rows, names, int(min(len(rows), good)))
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


def _check_not_empty(path: str, rows: Rows, names: Sequence[str], count: int) -> None:
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


def read_types(path: str, delimiter: str, header: bool, block_size: int) -> dict[str, str]:
    """Entity name -> type (its table); a name given two different types is an error."""
    types: dict[str, str] = {}
    checked: set[str] = set()
    for rows in read_rows(path, TYPE_COLUMNS, delimiter, header, block_size):
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

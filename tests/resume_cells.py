"""The resume matrix: which run configurations resume from a checkpoint, and which refuse.

A cell is a checkpoint written under one configuration (table optimizers, sharding, world size)
and resumed under another. `expected` says what must happen: a resume that restores weights and
optimizer state bit for bit (and, on the same world size and plan, ends bit-equal to a run never
interrupted), or a refusal before training that names the tables and
`training.resume_optimizer: false`. tests/distributed/test_resume_matrix.py checks every cell with real
torchrun workers; `INTERRUPTIONS` lists the whole-job tests of how a checkpoint comes to be
(tests/distributed/test_fault_tolerance.py).

    python -m tests.resume_cells [--update docs/fault-tolerance.md]

prints (or writes into the doc, between its resume-matrix markers) the tables of the docs, made
from these definitions; tests/unit/test_docs.py keeps the doc identical to them.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

OPTIMIZERS = {  # name in the docs -> the optimizer of each table (user, tweet, advertiser)
    "sgd": ("sgd", "sgd", "sgd"),
    "adagrad": ("adagrad", "adagrad", "adagrad"),
    "rowwise_adagrad": ("rowwise_adagrad", "rowwise_adagrad", "rowwise_adagrad"),
    "mixed": ("rowwise_adagrad", "sgd", "adagrad"),
}
TABLES = ("user", "tweet", "advertiser")
SHARDINGS = ("table_wise", "row_wise", "column_wise", "table_row_wise", "planner")
WORLD_SIZES = ((1, 1), (2, 2), (2, 1), (1, 2))
EMBEDDING_DIM = 256  # column_wise then splits every table into 2 column shards
CW_BLOCK = 128  # TorchRec's column-wise shard width (torchrec.distributed.planner MIN_CW_DIM)
STEPS_BEFORE, STEPS_AFTER = 4, 4  # checkpoint at step 4, resume to step 8
EXTRAS = {  # variant -> what it changes, on top of the planner's choice of sharding
    "fp16": "fp16 tables",
    "reciprocal": "`model.reciprocal_relations: true`",
    "validation": "validation every 2 steps",
}
REFUSAL = (
    "cannot resume the optimizer state of {tables} from {checkpoint} ({detail}): row-wise "
    "Adagrad keeps one value per row and column shard, so its state does not move to a plan "
    "with another number of column shards (column_wise); set training.resume_optimizer: false "
    "to restore the weights and start the optimizer fresh"
)
REFUSAL_EXAMPLE = REFUSAL.format(
    tables="table 'user' (rowwise_adagrad)",
    checkpoint="runs/x/checkpoints/step_400",
    detail="optim.state.tables.tables.embedding_bags.user.weight.user.momentum1 is 2000 "
    "there but 4000 here",
)


def refusal_pattern() -> re.Pattern[str]:
    """REFUSAL with any tables, checkpoint and detail."""
    parts = re.split(r"\{\w+\}", REFUSAL)
    return re.compile("(.+)".join(re.escape(part) for part in parts))


@dataclass(frozen=True)
class Run:
    """One side of a cell: how the checkpoint was written, or how it is resumed."""

    optimizer: str
    sharding: str
    world_size: int
    extra: str | None = None

    @property
    def name(self) -> str:
        extra = f"-{self.extra}" if self.extra else ""
        return f"{self.optimizer}-{self.sharding}{extra}-ws{self.world_size}"

    def column_shards(self) -> int:
        """Column shards of every table (the planner's choice never includes column_wise)."""
        return EMBEDDING_DIM // CW_BLOCK if self.sharding == "column_wise" else 1


@dataclass(frozen=True)
class Cell:
    saved: Run
    resumed: Run
    fast: bool = False  # also run by `make test` (`make test-resume` runs every cell)

    @property
    def name(self) -> str:
        return f"{self.saved.name}--{self.resumed.name}"


@dataclass(frozen=True)
class Outcome:
    refused_tables: tuple[str, ...]  # non-empty: refused before training, naming these tables
    exact: bool  # the resumed run ends bit-equal to one never interrupted


def expected(cell: Cell) -> Outcome:
    """Row-wise Adagrad keeps one accumulator per row and column shard, so its state moves only
    between plans with as many column shards; all other state moves anywhere. A resume on the
    same world size and plan ends bit-equal to an uninterrupted run."""
    refused = tuple(
        table
        for table, algorithm in zip(TABLES, OPTIMIZERS[cell.saved.optimizer], strict=True)
        if algorithm == "rowwise_adagrad"
        and cell.saved.column_shards() != cell.resumed.column_shards()
    )
    return Outcome(refused, exact=not refused and cell.saved == cell.resumed)


FAST = {  # (optimizer, sharding before, sharding after, world sizes, extra) that `make test` runs
    ("sgd", "table_wise", "table_wise", (2, 2), None),  # issue 13: SGD could not resume
    ("sgd", "table_wise", "table_wise", (2, 1), None),
    ("rowwise_adagrad", "row_wise", "column_wise", (2, 2), None),  # a refusal
    ("mixed", "planner", "planner", (2, 2), "validation"),
}


def _cell(
    optimizer: str, before: str, after: str, sizes: tuple[int, int], extra: str | None = None
) -> Cell:
    fast = (optimizer, before, after, sizes, extra) in FAST
    return Cell(
        Run(optimizer, before, sizes[0], extra), Run(optimizer, after, sizes[1], extra), fast
    )


def _next_sharding(sharding: str) -> str:
    return SHARDINGS[(SHARDINGS.index(sharding) + 1) % len(SHARDINGS)]


def cells() -> list[Cell]:
    """Every cell of the matrix, in a fixed order."""
    found = [  # the same sharding before and after, every move of world size
        _cell(optimizer, sharding, sharding, sizes)
        for optimizer in OPTIMIZERS
        for sharding in SHARDINGS
        for sizes in WORLD_SIZES
    ]
    for optimizer in OPTIMIZERS:  # another sharding after the checkpoint, on 2 ranks
        for before in SHARDINGS:  # every pair where row-wise Adagrad takes part, else a cycle
            for after in SHARDINGS:
                every_pair = "rowwise_adagrad" in OPTIMIZERS[optimizer]
                if after != before and (every_pair or after == _next_sharding(before)):
                    found.append(_cell(optimizer, before, after, (2, 2)))
    for extra in EXTRAS:
        for optimizer in OPTIMIZERS if extra == "fp16" else ["mixed"]:
            found += [_cell(optimizer, "planner", "planner", sizes, extra) for sizes in WORLD_SIZES]
    return found


@dataclass(frozen=True)
class Interruption:
    """A whole job interrupted one way and run again: it must end bit-equal to one run straight
    through (tests/distributed/test_fault_tolerance.py)."""

    how: str  # "end" (stop at a step count, then more steps), "kill" (SIGKILL of rank 1, the
    # launcher restarts the workers), "sigterm" (stop on request, then the same command again)
    launcher: str  # "torchrun", "tml.core.launch" or "entrypoint.sh"
    optimizer: str
    sharding: str
    fast: bool = False

    @property
    def name(self) -> str:
        return f"{self.how}-{self.launcher}-{self.optimizer}-{self.sharding}"


HOW = {
    "end": "the run ends at `num_train_steps`, then runs again with more steps",
    "kill": "SIGKILL of rank 1; `--max_restarts 3` restarts the workers",
    "sigterm": "SIGTERM to the launcher: the workers checkpoint and stop; the same command again",
}
SHARDING_OF = {"sgd": "table_wise", "adagrad": "row_wise", "rowwise_adagrad": "planner",
               "mixed": "table_row_wise"}  # fmt: skip
INTERRUPTIONS = [  # the first four run in `make test`: issue 13's two bugs and its must-shows
    Interruption("kill", "torchrun", "sgd", "table_wise", fast=True),
    Interruption("kill", "torchrun", "rowwise_adagrad", "planner", fast=True),
    Interruption("sigterm", "torchrun", "sgd", "table_wise", fast=True),
    Interruption("sigterm", "entrypoint.sh", "rowwise_adagrad", "planner", fast=True),  # execs
    Interruption("sigterm", "tml.core.launch", "rowwise_adagrad", "planner"),  # the launcher
    Interruption("kill", "tml.core.launch", "rowwise_adagrad", "planner"),
    Interruption("end", "torchrun", "sgd", "table_wise"),
] + [
    Interruption(how, "torchrun", optimizer, SHARDING_OF[optimizer])
    for how in HOW
    for optimizer in ("adagrad", "mixed")
]


# -- the tables of docs/fault-tolerance.md ------------------------------------------------------

START_MARKER = "<!-- resume-matrix:start -->"
END_MARKER = "<!-- resume-matrix:end -->"
ARROW = {sizes: f"{sizes[0]}→{sizes[1]}" for sizes in WORLD_SIZES}


def _mark(cell: Cell) -> str:
    outcome = expected(cell)
    text = "refused" if outcome.refused_tables else "exact" if outcome.exact else "✓"
    return f"**{text}**" if cell.fast else text


def _world_size_table(found: list[Cell], extra: bool) -> list[str]:
    first = "variant | optimizer" if extra else "optimizer | sharding"
    lines = [f"| {first} | " + " | ".join(ARROW.values()) + " |", "|---|---|---|---|---|---|"]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for cell in found:
        moves = (cell.saved.world_size, cell.resumed.world_size)
        if (cell.saved.sharding == cell.resumed.sharding) and bool(cell.saved.extra) == extra:
            key = (EXTRAS[cell.saved.extra], cell.saved.optimizer) if extra else (
                cell.saved.optimizer, cell.saved.sharding)  # fmt: skip
            rows.setdefault(key, {})[ARROW[moves]] = _mark(cell)
    for (a, b), marks in rows.items():
        lines.append(
            f"| {a} | {b} | " + " | ".join(marks.get(m, "–") for m in ARROW.values()) + " |"
        )
    return lines


def _sharding_table(found: list[Cell]) -> list[str]:
    lines = ["| saved \\ resumed | " + " | ".join(SHARDINGS) + " |", "|---" * 6 + "|"]
    for before in SHARDINGS:
        row = []
        for after in SHARDINGS:
            pair = [c for c in found if (c.saved.sharding, c.resumed.sharding) == (before, after)
                    and c.saved.sharding != c.resumed.sharding]  # fmt: skip
            resumed = [_name(c) for c in pair if not expected(c).refused_tables]
            refused = [_name(c) for c in pair if expected(c).refused_tables]
            text = ", ".join(resumed) + ("; refused: " + ", ".join(refused) if refused else "")
            row.append(text.strip("; ") or "–")
        lines.append(f"| {before} | " + " | ".join(row) + " |")
    return lines


def _name(cell: Cell) -> str:
    return f"**{cell.saved.optimizer}**" if cell.fast else cell.saved.optimizer


def markdown() -> str:
    """The resume-matrix section of docs/fault-tolerance.md."""
    found = cells()
    interruptions = ["| interruption | launcher | optimizer | sharding |", "|---|---|---|---|"]
    for case in INTERRUPTIONS:
        how = f"**{HOW[case.how]}**" if case.fast else HOW[case.how]
        interruptions.append(f"| {how} | {case.launcher} | {case.optimizer} | {case.sharding} |")
    return "\n".join([
        f"{len(found)} checkpoint round trips (`tests/distributed/test_resume_matrix.py`) and "
        f"{len(INTERRUPTIONS)} interrupted jobs (`tests/distributed/test_fault_tolerance.py`); `make test` "
        "runs those in **bold**, `make test-resume` all of them. Optimizers: each table's "
        "(`mixed`: user rowwise_adagrad, tweet sgd, advertiser adagrad). `planner`: no "
        f"`sharding_type`, the planner's choice. Tables are {EMBEDDING_DIM} wide, so column_wise "
        f"cuts each into {EMBEDDING_DIM // CW_BLOCK} column shards of {CW_BLOCK}.",
        "",
        "* **exact**: the resumed run ends bit-equal to one never interrupted;",
        "* **✓**: the weights and optimizer state restored are bit-equal to those saved, and "
        "training goes on (another world size or plan changes how the steps are computed);",
        "* **refused**: before any training step, exit 2, with `error: " + REFUSAL_EXAMPLE + "`. "
        "With `training.resume_optimizer: false` the weights are restored and the optimizer "
        "starts fresh (tested for every refused cell).",
        "",
        "**Same plan, another world size:**",
        "",
        *_world_size_table(found, extra=False),
        "",
        "**Another sharding after the checkpoint (2 ranks → 2):**",
        "",
        *_sharding_table(found),
        "",
        "**Variants (planner's choice of sharding):**",
        "",
        *_world_size_table(found, extra=True),
        "",
        "**How the checkpoint came to be** (whole jobs, 2 ranks, compared with a run straight "
        "through; with validation during training):",
        "",
        *interruptions,
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the resume matrix as markdown.")
    parser.add_argument("--update", type=Path, help="rewrite this file's resume-matrix section")
    args = parser.parse_args(argv)
    if args.update is None:
        print(markdown())
        return 0
    from tml.core.config_docs import update_between_markers

    update_between_markers(args.update, markdown(), START_MARKER, END_MARKER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

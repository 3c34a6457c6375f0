"""Bad inputs through the real command: the exit code, one `error:` line that names the field,
file, row or path, and the earlier outputs in the save dir left as they were.

Each case starts from a copy of an earlier run's save dir (checkpoints step_10 and step_20,
config.yaml, metrics, embeddings) and breaks one thing. Cases run `python run.py` (one rank; most
fail before the process group starts), two at a time; one runs torchrun with 2 ranks and
--max_restarts 3 to show that a bad input is not retried. The table of docs/troubleshooting.md
lists every case with its message (checked below).
"""

from __future__ import annotations

import builtins
import copy
import json
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import (
    REPO,
    RUN_PY,
    assert_ok,
    small_config,
    torchrun_command,
    torchrun_env,
    write_config,
)  # fmt: skip
from tml.core.save_dir_lock import LOCK_FILE, LockRecord

EDGES = 1000  # rows of the small bad data files (4 steps of 250)
MOUNTED: list[Path] = []  # tmpfs mounts made by cases, unmounted when the module ends


@dataclass
class Case:
    """One run's inputs, which a bad input's `arrange` breaks."""

    tmp: Path
    graph: Path
    config: dict[str, Any]
    save_dir: Path
    config_path: Path

    def edges(self) -> pa.Table:
        """The first EDGES rows of the graph's training data, as ints."""
        return pq.read_table(sorted((self.graph / "train").glob("*.parquet"))[0]).slice(0, EDGES)

    def use_data(self, table: pa.Table) -> None:
        """Train on `table` (one file of two row groups) for a few epochs past the checkpoints."""
        data = self.tmp / "data"
        data.mkdir()
        pq.write_table(table, data / "part-0.parquet", row_group_size=EDGES // 2)
        self.config["train_data"]["data_root"] = str(data)
        self.config["validation_data"] = None
        self.config["training"].update(num_epochs=10, num_train_steps=1000)  # past step 20

    def set_column(self, name: str, values: Any) -> None:
        table = self.edges()
        self.use_data(table.set_column(table.schema.get_field_index(name), name, values))

    def mount_tmpfs(self, headroom_kb: int, read_only: bool = False) -> None:
        """Put the save dir (with the earlier outputs) on a tmpfs with `headroom_kb` free."""
        earlier = self.tmp / "earlier"
        shutil.move(self.save_dir, earlier)
        pages = sum(-(-f.stat().st_size // 4096) for f in earlier.rglob("*") if f.is_file())
        self.save_dir.mkdir()
        size = f"size={4 * pages + 64 + headroom_kb}k"  # + 64k for directories
        mount("-t", "tmpfs", "-o", size, "tmpfs", str(self.save_dir))
        MOUNTED.append(self.save_dir)
        shutil.copytree(earlier, self.save_dir, dirs_exist_ok=True)
        if read_only:
            mount("-o", "remount,ro", str(self.save_dir))

    def empty_dir(self) -> str:
        (self.tmp / "empty").mkdir()
        return str(self.tmp / "empty")


@dataclass(frozen=True)
class BadInput:
    name: str  # as in docs/troubleshooting.md
    exit_code: int
    message: str  # part of the `error:` line (or, for exit 0, of the warning)
    arrange: Callable[[Case], None]
    ranks: int = 1  # 1: `python run.py`; 2: torchrun with --max_restarts 3
    needs: str | None = None  # "mount": root with a working `mount -t tmpfs`
    never_created: str | None = None  # a file (under the case's folder) the run must not create


def table(case: Case, index: int) -> dict[str, Any]:
    return case.config["model"]["embeddings"]["tables"][index]


def write_text(case: Case, text: str) -> None:
    case.config_path.write_text(text)


def truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def with_value(column: str, row: int, value: int) -> Callable[[Case], None]:
    def arrange(case: Case) -> None:
        values = case.edges().column(column).to_numpy().copy()
        values[row] = value
        case.set_column(column, pa.array(values))

    return arrange


def checkpoint_file(case: Case, step: int, name: str) -> Path:
    return case.save_dir / "checkpoints" / f"step_{step}" / name


class CreatesAFile:
    """Unpickled by a trusting loader (pickle.load, torch.load(weights_only=False)), this
    creates `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return builtins.open, (str(self.path), "w")


def plant_code(name: str) -> Callable[[Case], None]:
    """step_10 alone, its file `name` replaced by a same-size pickle that creates `ran`."""

    def arrange(case: Case) -> None:
        shutil.rmtree(case.save_dir / "checkpoints" / "step_20")
        path = checkpoint_file(case, 10, name)
        data = pickle.dumps(CreatesAFile(case.tmp / "ran"), protocol=2)
        path.write_bytes(data + b" " * (path.stat().st_size - len(data)))

    return arrange


def lock_by_a_live_job(case: Case) -> None:
    """The save dir held by another job: this test process, which is alive."""
    record = LockRecord.mine()
    (case.save_dir / LOCK_FILE).write_text(json.dumps(asdict(record)))


CASES = [
    # -- config ---------------------------------------------------------------------------------
    BadInput("unknown config key", 2, "training.num_train_stpes: unknown key",
             lambda c: c.config["training"].update(num_train_stpes=5)),
    BadInput("wrong type", 2, "training.num_train_steps: Input should be a valid integer",
             lambda c: c.config["training"].update(num_train_steps="many")),
    BadInput("missing required field", 2, "train_data.per_replica_batch_size: Field required",
             lambda c: c.config["train_data"].pop("per_replica_batch_size")),
    BadInput("relation naming a missing table", 2,
             "model.relations[1].rhs: no table named 'tweets'",
             lambda c: c.config["model"]["relations"][1].update(rhs="tweets")),
    BadInput("zero table size", 2,
             "model.embeddings.tables[0].num_embeddings: Input should be greater than 0",
             lambda c: table(c, 0).update(num_embeddings=0)),
    BadInput("negative embedding dim", 2,
             "model.embeddings.tables[1].embedding_dim: Input should be greater than 0",
             lambda c: table(c, 1).update(embedding_dim=-16)),
    BadInput("early stopping on a metric the validation does not compute", 2,
             "training.early_stopping.metric: unknown validation metric 'mmr'",
             lambda c: c.config["training"].update(early_stopping={"metric": "mmr"})),
    BadInput("missing config file", 2, "does not exist (pass --config_yaml_path=FILE)",
             lambda c: setattr(c, "config_path", c.tmp / "missing" / "config.yaml")),
    BadInput("invalid YAML", 2, "is not valid YAML at line 3",
             lambda c: write_text(c, "training:\n  num_train_steps: [10\n")),
    # -- data -----------------------------------------------------------------------------------
    BadInput("data dir without parquet files", 2, "no parquet files found",
             lambda c: c.config["train_data"].update(data_root=c.empty_dir())),
    BadInput("missing parquet column", 2, "missing column 'rhs'",
             lambda c: c.use_data(c.edges().drop(["rhs"]))),
    BadInput("float ids", 2, "column 'lhs' has type double, expected integers",
             lambda c: c.set_column("lhs", pa.array(c.edges().column("lhs").to_numpy() * 1.0))),
    BadInput("file that is not parquet", 2, "cannot read as parquet",
             lambda c: (c.use_data(c.edges()),
                        (c.tmp / "data" / "part-1.parquet").write_bytes(b"not parquet" * 9))),
    BadInput("negative id", 2, "row group 0: lhs=-1 at file row 3 is outside [0, 2000)",
             with_value("lhs", 3, -1)),
    BadInput("id >= num_embeddings", 2, "row group 1: rhs=1000000 at file row 705 is outside",
             with_value("rhs", 705, 1_000_000)),
    BadInput("rel out of range (2 ranks, not retried)", 2,
             "rel=9 at file row 7 is outside [0, 4) (rel indexes model.relations)",
             with_value("rel", 7, 9), ranks=2),
    BadInput("missing value (NaN) in an id column", 2, "row group 0: null lhs at file row 2",
             lambda c: c.set_column("lhs", pa.array(
                 [None if i == 2 else v for i, v in enumerate(c.edges().column("lhs").to_pylist())],
                 pa.int64()))),
    # -- save dir -------------------------------------------------------------------------------
    BadInput("save dir that is a file", 2, "exists and is not a directory",
             lambda c: (shutil.rmtree(c.save_dir), c.save_dir.write_text("notes\n"))),
    BadInput("unwritable save dir (read-only file system)", 2, "is not writable",
             lambda c: c.mount_tmpfs(1024, read_only=True), needs="mount"),
    BadInput("disk full during a checkpoint", 1, "No space left on device",
             lambda c: (c.mount_tmpfs(100), c.config["training"].update(num_train_steps=30)),
             needs="mount"),
    # -- checkpoints ----------------------------------------------------------------------------
    BadInput("checkpoint of another config (table size changed)", 2,
             "table 'user' is 2500x16 but the run in",
             lambda c: table(c, 0).update(num_embeddings=2500)),
    BadInput("truncated file in the newest checkpoint (recovers)", 0,
             "skipping checkpoint",  # ... step_20: __0_0.distcp is N bytes, the manifest says M
             lambda c: truncate(checkpoint_file(c, 20, "__0_0.distcp"))),
    BadInput("newest checkpoint without .metadata (recovers)", 0, "no .metadata (DCP index)",
             lambda c: checkpoint_file(c, 20, ".metadata").unlink()),
    BadInput("warm start from a missing checkpoint", 2, "no checkpoint there (no .metadata)",
             lambda c: warm_start(c, c.tmp / "nothing")),
    BadInput("optimizer state that cannot move to the new config", 2,
             "cannot resume the optimizer state of table 'user' (adagrad)",
             lambda c: table(c, 0).update(optimizer={"adagrad": {"lr": 0.05}})),
    BadInput("checkpoint file that would run code (rank_0.pt)", 2,
             "rank_0.pt holds objects other than tensors and numbers",
             plant_code("rank_0.pt"), never_created="ran"),
    BadInput("checkpoint index that would run code (.metadata)", 2,
             ".metadata is refused: refusing io.open", plant_code(".metadata"),
             never_created="ran"),
    BadInput("save dir in use by another job", 2, "is in use by job", lock_by_a_live_job),
    BadInput("warm start onto a table that shrank", 2,
             "table 'user' has 2000 rows but model.embeddings.tables[0] has 1500",
             lambda c: (warm_start(c, checkpoint_file(c, 20, "")),
                        table(c, 0).update(num_embeddings=1500))),
]  # fmt: skip


def warm_start(case: Case, checkpoint: Path) -> None:
    """A new save dir that warm-starts from `checkpoint` (the earlier run's stays as it was)."""
    case.config["training"]["initial_checkpoint_dir"] = str(checkpoint)
    case.save_dir = case.tmp / "new_run"
    case.save_dir.mkdir()
    (case.save_dir / "notes.txt").write_text("an earlier file\n")


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def can_mount(tmp: Path) -> bool:
    target = tmp / "mount-probe"
    target.mkdir()
    try:
        mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target))
    except (OSError, subprocess.CalledProcessError):
        return False
    subprocess.run(["umount", str(target)], check=True)
    return True


def snapshot(path: Path) -> dict[str, bytes]:
    """The content of every file at or below `path` (the earlier run's files are small)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f.relative_to(path)): f.read_bytes() for f in files}


def changed_files(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    """Earlier files whose content changed; metrics.jsonl may only have grown (new steps)."""
    return [
        name
        for name, content in before.items()
        if after.get(name, b"")[: len(content) if name == "metrics.jsonl" else None] != content
    ]


@dataclass
class Outcome:
    case: Case
    before: dict[str, bytes]
    result: subprocess.CompletedProcess[str]


def run_case(spec: BadInput, base: Case) -> Outcome:
    tmp = base.tmp.parent / re.sub(r"\W+", "_", spec.name)
    tmp.mkdir()
    case = Case(tmp, base.graph, copy.deepcopy(base.config), tmp / "run", tmp / "config.yaml")
    shutil.copytree(base.save_dir, case.save_dir)
    spec.arrange(case)
    if case.config_path == tmp / "config.yaml" and not case.config_path.exists():
        write_config(case.config_path, case.config)
    before = snapshot(case.save_dir)
    if spec.ranks == 1:
        command = [sys.executable, str(RUN_PY), f"--config_yaml_path={case.config_path}",
                   f"--save_dir={case.save_dir}"]  # fmt: skip
    else:
        command = torchrun_command(2, case.config_path, case.save_dir, max_restarts=3)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=torchrun_env(), cwd=REPO
    )
    return Outcome(case, before, result)


@pytest.fixture(scope="module")
def outcomes(
    small_graph: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Outcome]]]:
    """Every case, started two at a time as soon as the module begins."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    config = small_config(small_graph, num_train_steps=20, checkpoint_every_n=10, num_eval_steps=0)
    base = Case(tmp / "base", small_graph, config, tmp / "base" / "run", tmp / "base" / "c.yaml")
    base.tmp.mkdir()
    earlier = subprocess.run(
        [sys.executable, str(RUN_PY), f"--config_yaml_path={write_config(base.config_path, config)}",
         f"--save_dir={base.save_dir}"],
        capture_output=True, text=True, timeout=300, env=torchrun_env(), cwd=REPO,
    )  # fmt: skip
    assert_ok(earlier)
    mountable = can_mount(tmp)
    futures: dict[str, Future[Outcome]] = {}
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for spec in CASES:
                if spec.needs != "mount" or mountable:
                    futures[spec.name] = pool.submit(run_case, spec, base)
            yield futures
    finally:
        while MOUNTED:
            subprocess.run(["umount", str(MOUNTED.pop())], check=False)


@pytest.mark.parametrize("spec", CASES, ids=[spec.name for spec in CASES])
def test_bad_input(spec: BadInput, outcomes: dict[str, Future[Outcome]]) -> None:
    if spec.name not in outcomes:
        pytest.skip("needs root and `mount -t tmpfs` to make a small or read-only file system")
    outcome = outcomes[spec.name].result()
    result, case = outcome.result, outcome.case
    if spec.never_created:
        assert not (case.tmp / spec.never_created).exists(), "a checkpoint file ran code"
    output = f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == spec.exit_code, output
    if spec.exit_code == 0:  # a damaged checkpoint is skipped, the one before it used
        warnings = [line for line in result.stdout.splitlines() if "skipping checkpoint" in line]
        assert len(warnings) == 1 and spec.message in warnings[0], output
        assert f"{case.save_dir}/checkpoints/step_20" in warnings[0]
        assert f"resumed from {case.save_dir}/checkpoints/step_10" in result.stdout
        assert (case.save_dir / "embeddings" / "user.parquet").is_file()
        return
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    # With 2 ranks the other rank may fail after the first one left: the first line is the cause.
    assert errors and spec.message in errors[0], output
    assert len(errors) == 1 or spec.ranks > 1, output
    if spec.ranks > 1:  # --max_restarts 3, yet the workers started once: no retry
        assert result.stdout.count("world size 2 on") == 1, output
    after = snapshot(case.save_dir)
    assert not changed_files(outcome.before, after)
    assert not [name for name in after if name.startswith("checkpoints/.tmp")], after
    if spec.exit_code == 1:  # disk full: the run got as far as a new checkpoint
        assert f"cannot write checkpoint {case.save_dir}/checkpoints/.tmp-step_" in errors[0]
        assert case.save_dir.name in errors[0]


def troubleshooting_rows() -> dict[str, tuple[str, str]]:
    """docs/troubleshooting.md's table: problem -> (exit code, message)."""
    text = (REPO / "docs" / "troubleshooting.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].isdigit():
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_troubleshooting_page_lists_every_bad_input() -> None:
    rows = troubleshooting_rows()
    assert len(CASES) >= 20 and len({spec.name for spec in CASES}) == len(CASES)
    assert sorted(rows) == sorted(spec.name for spec in CASES)
    for spec in CASES:
        exit_code, message = rows[spec.name]
        assert exit_code == str(spec.exit_code), spec.name
        assert spec.message in message.replace("`", ""), (spec.name, message)

"""The end of a run: the export from the tables in memory, and the timeline of the fixed costs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tests.conftest import assert_ok, embeddings, run_torchrun, small_config, write_config
from tml.core.checkpoint import complete_checkpoints
from tml.core.config import load_config
from tml.projects.twhin.artifacts.checkpoints import load_tables
from tml.projects.twhin.config import TwhinConfig


def test_final_export_equals_the_final_checkpoint_from_memory_or_files(
    small_graph: Path, tmp_path: Path
) -> None:
    config = small_config(small_graph, num_train_steps=12)
    config["validation_data"] = None
    for table in config["model"]["embeddings"]["tables"]:
        table["sharding_type"] = "table_wise"  # whole tables, some on rank 0, some on rank 1
    save_dir = tmp_path / "run"
    result = run_torchrun(2, write_config(tmp_path / "config.yaml", config), save_dir)
    assert_ok(result)

    exported = re.search(r"exported .* \((.*) from memory\)", result.stdout)
    assert exported, result.stdout[-3000:]
    held = set(exported.group(1).split(", "))
    tables = {"user", "tweet", "advertiser"}
    assert held and held < tables, f"rank 0 held {held}: both paths must be exercised"
    final = complete_checkpoints(save_dir / "checkpoints")[-1]
    assert final.name == "step_12"
    saved, _ = load_tables(load_config(TwhinConfig, save_dir / "config.yaml"), final)
    for table in tables:
        np.testing.assert_array_equal(embeddings(save_dir, table), saved[table].numpy())

    timeline = next(line for line in result.stdout.splitlines() if "timeline wall/cpu s:" in line)
    phases = dict(part.split("=") for part in timeline.split(": ", 1)[1].split())
    assert list(phases) == [
        "imports", "config", "data_plan", "process_group", "model", "restore", "first_step",
        "steps", "final_checkpoint", "export", "teardown", "total",
    ]  # fmt: skip
    wall = {name: float(value.split("/")[0]) for name, value in phases.items()}
    assert all(seconds >= 0 for seconds in wall.values())
    assert abs(sum(wall.values()) - 2 * wall["total"]) < 0.05 + 0.01 * wall["total"]

"""docs/scaling.md's planned half is current (the generator's output is what the page says), and
the pooled lookup output it rests on has W x S rows per table on real TorchRec with 2 ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.scaling.costs import pooled_output_rows
from tests.conftest import REPO, assert_ok, torchrun_env

SCRIPT = REPO / "benchmarks" / "scaling_plan.py"
WORKER = REPO / "tests" / "workers" / "pooled_output_rows.py"


def test_the_committed_page_is_what_the_generator_writes() -> None:
    """All three cluster sizes, planned again (about 10 s of TorchRec's planner)."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "docs/scaling.md"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=torchrun_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:] or "docs/scaling.md is stale"


def test_pooled_output_has_every_ranks_slots_on_real_torchrec(tmp_path: Path) -> None:
    """The doc's buffers and traffic assume a holder computes W x S pooled rows per table."""
    types = ["table_wise", "row_wise", "table_row_wise"]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
         "--nproc_per_node", "2", str(WORKER), str(tmp_path), *types],
        capture_output=True, text=True, timeout=300, env=torchrun_env(), cwd=REPO,
    )  # fmt: skip
    assert_ok(result)
    records = [r for f in sorted(tmp_path.glob("rank_*.json")) for r in json.loads(f.read_text())]
    assert len(records) == 2 * len(types)
    for record in records:
        expected = pooled_output_rows(
            record["sharding_type"], record["world_size"], record["slots"]
        )
        assert record["rows"] and set(record["rows"]) == {expected}, record

"""What a run pays besides its steps: the modules training imports, and the timeline it logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import REPO
from tml.core import timeline

NOT_FOR_TRAINING = ("faiss", "matplotlib", "optuna", "pandas", "sqlalchemy", "scipy", "sklearn")
"""Libraries of search, the run report and tuning: a training process must not load them."""


def test_training_imports_no_search_report_or_tuning_library() -> None:
    # Everything a training rank loads: run.py, the TensorBoard writer, the export.
    code = (
        "import json, sys\n"
        "import tml.projects.twhin.run, tml.projects.twhin.artifacts.export\n"
        "from torch.utils.tensorboard import SummaryWriter\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    assert "torchrec" in loaded and "pyarrow" in loaded  # the check sees real imports
    assert not loaded & set(NOT_FOR_TRAINING), sorted(loaded & set(NOT_FOR_TRAINING))


def test_timeline_phases_run_from_process_start_and_add_up() -> None:
    started = timeline.process_start_time()
    assert started <= time.time()
    before = len(timeline.phases())
    timeline.mark("first")
    busy = time.process_time() + 0.02
    while time.process_time() < busy:  # CPU time for the second phase
        pass
    timeline.mark("second")
    phases = timeline.phases()[before:]
    assert [name for name, _, _ in phases] == ["first", "second"]
    assert phases[1][1] >= 0.02 and phases[1][2] >= 0.02
    summary = timeline.summary()
    assert summary.startswith("timeline wall/cpu s: ") and "second=" in summary
    total = float(summary.rsplit("total=", 1)[1].split("/")[0])
    assert abs(total - sum(wall for _, wall, _ in timeline.phases())) < 0.02
    assert total >= time.time() - started - 1.0  # counted from process start, not import

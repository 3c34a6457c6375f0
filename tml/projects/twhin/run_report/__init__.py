"""A run's report: PNG plots and an index.html that shows them with its config and final metrics.

    python -m tml.projects.twhin.report --save_dir D [--sample N]

writes `D/report/`: loss, validation metrics, throughput, learning rates and embedding norms over
steps (from metrics.jsonl), norm histograms of the exported tables and a PCA projection of a
sample of their rows, coloured by planted community on the synthetic graph and by entity type
otherwise. Modules: run_data (reading), plots (figures), page (html); the command is report.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.run_report.page import write_page
from tml.projects.twhin.run_report.plots import PLOTS
from tml.projects.twhin.run_report.run_data import RunData

DEFAULT_SAMPLE = 2000


def write_report(
    save_dir: str | Path,
    sample: int = DEFAULT_SAMPLE,
    extra: list[tuple[str, dict[str, Any]]] | None = None,
) -> Path:
    """Draw every plot the run has data for, then the page; returns index.html's path.
    `extra`: more (title, record) tables for the page, e.g. the drift since a previous run."""
    save_dir = Path(save_dir)
    run = RunData.read(save_dir, sample)
    out = RunDir(save_dir).report
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name, caption, draw in PLOTS:
        if draw(run, out / name) is not None:
            drawn.append((name, caption))
        else:
            (out / name).unlink(missing_ok=True)  # an older report's plot would be stale
    return write_page(run, drawn, out / "index.html", extra or [])

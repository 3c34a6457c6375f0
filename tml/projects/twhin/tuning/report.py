"""The tune dir's report: `<D>/report/index.html` with the trials table, the best values and
Optuna's matplotlib plots (optimisation history, parameter importances, the validation MRR of
every trial at each evaluation, and each parameter against the objective)."""

from __future__ import annotations

import datetime
import html
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import optuna  # noqa: E402
from matplotlib import pyplot  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from tml.core.files import write_text_atomically  # noqa: E402
from tml.projects.twhin.tuning.outputs import best_trial, format_table  # noqa: E402
from tml.projects.twhin.tuning.storage import STORAGE_ENV  # noqa: E402

log = logging.getLogger("tml")

REPORT_DIR = "report"
SETTINGS_FILE = "tune.json"  # written by every tune command: study name and storage
PLOTS: tuple[tuple[str, str, Callable], ...] = (
    ("history.png", "Optimisation history: validation MRR of each complete trial and the best "
     "so far.", optuna_plots.plot_optimization_history),
    ("importances.png", "Parameter importances for validation MRR (PED-ANOVA over complete "
     "trials).", optuna_plots.plot_param_importances),
    ("intermediate.png", "Validation MRR of every trial at each evaluation (x: evaluation "
     "number); pruned trials stop early.", optuna_plots.plot_intermediate_values),
    ("slice.png", "Each parameter's sampled values against validation MRR.",
     optuna_plots.plot_slice),
)  # fmt: skip
_STYLE = "body{font-family:sans-serif;max-width:1200px;margin:2em auto} img{max-width:100%}"


def _draw(study: optuna.Study, draw: Callable, path: Path) -> bool:
    """Save one plot; False when the study has nothing to show for it yet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's "experimental" and matplotlib layout notes
        try:
            axes = draw(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances need complete trials
            log.info("report: %s left out (%s)", path.name, exc)
            path.unlink(missing_ok=True)
            return False
        figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True


def is_tune_dir(save_dir: str | Path) -> bool:
    return (Path(save_dir) / SETTINGS_FILE).is_file()


def report_tune_dir(save_dir: str | Path) -> Path:
    """The report of a tune dir, from its study: `$TML_TUNE_STORAGE`, else the storage URL in
    tune.json (which has no password: give PostgreSQL URLs through the variable)."""
    save_dir = Path(save_dir)
    settings = json.loads((save_dir / SETTINGS_FILE).read_text())
    url = os.environ.get(STORAGE_ENV) or settings["storage"]
    if "***" in url:
        raise ValueError(f"{save_dir}'s study is in {url}: set {STORAGE_ENV} to its full URL")
    study = optuna.load_study(study_name=settings["study_name"], storage=url)
    return write_tune_report(study, save_dir)


def write_tune_report(study: optuna.Study, save_dir: Path) -> Path:
    """Draw the plots the study has data for, then index.html; returns its path."""
    out = save_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    drawn = [(name, caption) for name, caption, draw in PLOTS if _draw(study, draw, out / name)]
    best = best_trial(study)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Tune report: {html.escape(study.study_name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Tune report: study {html.escape(study.study_name)}</h1>",
        f"<p>{html.escape(str(save_dir.resolve()))}; generated "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}.</p>",
    ]
    if best is not None:
        values = "".join(
            f"<li><code>{html.escape(k)}</code> = {html.escape(str(v))}</li>"
            for k, v in best.params.items()
        )
        parts.append(
            f"<h2>Best: trial {best.number}, validation MRR {best.value:.4f}</h2><ul>{values}</ul>"
            "<p>Its config: <code>best.yaml</code>.</p>"
        )
    for name, caption in drawn:
        parts.append(f"<figure><img src='{name}' alt='{html.escape(caption)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    parts += ["<h2>Trials</h2>", f"<pre>{html.escape(format_table(study))}</pre>", "</body></html>"]
    page = out / "index.html"
    write_text_atomically(page, "\n".join(parts) + "\n")
    return page

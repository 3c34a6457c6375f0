"""What a study leaves in the tune dir: the best config, and its trials as a table, CSV and JSON.

Files are written whole and renamed into place, so workers that finish at the same time on a
shared tune dir never leave a torn file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shlex
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from tml.core.files import write_text_atomically
from tml.projects.twhin.tuning.space import format_values
from tml.projects.twhin.tuning.trial_config import TrialConfigBuilder

log = logging.getLogger("tml")

BEST_CONFIG = "best.yaml"
TRIALS_CSV = "trials.csv"
TRIALS_JSON = "trials.json"
COLUMNS = ("number", "state", "validation_mrr", "evaluations", "seconds")


def _write(path: Path, text: str) -> Path:
    write_text_atomically(path, text)
    return path


def trial_rows(study: optuna.Study) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per trial (params as columns, in the order first seen), and the param names."""
    params: list[str] = []
    rows = []
    for trial in study.get_trials(deepcopy=False):
        params += [name for name in trial.params if name not in params]
        seconds = (
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            if trial.datetime_complete and trial.datetime_start
            else None
        )
        rows.append({
            "number": trial.number,
            "state": trial.state.name.lower(),
            "validation_mrr": _value(trial),
            "evaluations": trial.user_attrs.get("evaluations"),
            "seconds": None if seconds is None else round(seconds, 1),
            **trial.params,
            "save_dir": trial.user_attrs.get("save_dir"),
            "reason": trial.user_attrs.get("reason", ""),
        })  # fmt: skip
    return rows, params


def _value(trial: FrozenTrial) -> float | None:
    """The objective, or for a pruned trial the last MRR it reached."""
    if trial.value is not None:
        return trial.value
    if trial.intermediate_values:
        return trial.intermediate_values[max(trial.intermediate_values)]
    return None


def write_trial_tables(study: optuna.Study, save_dir: Path) -> tuple[Path, Path]:
    rows, params = trial_rows(study)
    header = [*COLUMNS, *params, "save_dir", "reason"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = _write(save_dir / TRIALS_CSV, buffer.getvalue())
    json_path = _write(save_dir / TRIALS_JSON, json.dumps(rows, indent=1) + "\n")
    return csv_path, json_path


def format_table(study: optuna.Study) -> str:
    """The trials as aligned text, best first among complete ones."""
    rows, params = trial_rows(study)
    header = [*COLUMNS, *params]
    cells = [[_cell(row.get(key)) for key in header] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(header)]  # fmt: skip
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: -math.inf if t.value is None else t.value, default=None)


def write_best_config(
    study: optuna.Study, builder: TrialConfigBuilder, save_dir: Path
) -> Path | None:
    """`best.yaml`: the base config with the best trial's values, training into `<D>/best`."""
    best = best_trial(study)
    if best is None:
        return None
    known = builder.space.fields()
    values = {k: v for k, v in best.params.items() if k in known}
    if dropped := sorted(set(best.params) - set(values)):
        log.warning("best.yaml leaves out %s: not in the current search space", ", ".join(dropped))
    config = builder.build(values, save_dir / "best")
    path = save_dir / BEST_CONFIG
    header = [
        f"Best of {len(study.trials)} trials of study {study.study_name!r}: trial {best.number}, "
        f"validation MRR {best.value:.4f} ({best.user_attrs.get('save_dir')}).",
        f"Base config: {builder.base_path}; tuned values: {format_values(values)}",
        f"Train it: python tml/projects/twhin/run.py --config_yaml_path={shlex.quote(str(path))}",
        "Score it: python -m tml.projects.twhin.evaluate --save_dir "
        f"{shlex.quote(str(save_dir / 'best'))} --split test",
    ]
    text = "".join(f"# {line}\n" for line in header)
    return _write(path, text + yaml.safe_dump(config, sort_keys=False))

"""The report's index.html: final metrics, the plots and the run's config on one static page."""

from __future__ import annotations

import datetime
import html
from pathlib import Path
from typing import Any

from tml.core.files import write_text_atomically
from tml.projects.twhin.run_report.run_data import RunData

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.number { text-align: right; font-family: monospace; }
figure { margin: 1.5em 0; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""
_SKIP = {"time", "split"}


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e3 else f"{value:,.0f}"
    return str(value)


def _rows(record: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten nested values (learning rates, per-table norms) to `outer.inner` rows."""
    rows = []
    for key, value in record.items():
        if key in _SKIP:
            continue
        if isinstance(value, dict):
            rows += _rows(value, f"{prefix}{key}.")
        else:
            rows.append((prefix + key, value))
    return rows


def _table(title: str, record: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(key)}</th><td class='number'>{html.escape(_value(value))}</td></tr>"
        for key, value in _rows(record)
    )
    return f"<h3>{html.escape(title)}</h3>\n<table>{cells}</table>"


def final_metrics(run: RunData) -> list[tuple[str, dict[str, Any]]]:
    """(title, record) of the last train, validation and norm records and every eval file."""
    sections = []
    metrics = run.metrics
    for title, records in (
        ("Last training record", metrics.train),
        ("Last validation", metrics.validation),
        ("Embedding norms at the last checkpoint", metrics.embeddings),
    ):
        if records:
            sections.append((f"{title} (step {records[-1]['step']})", records[-1]))
    for split, result in run.evaluations.items():
        sections.append((f"evaluate --split {split} ({result.get('checkpoint', '')})", result))
    return sections


def write_page(
    run: RunData,
    plots: list[tuple[str, str]],
    path: Path,
    extra: list[tuple[str, dict[str, Any]]] | None = None,
) -> Path:
    """index.html beside the plots; `plots` is (file name, caption) in display order, `extra`
    more (title, record) tables after the final metrics."""
    generated = datetime.datetime.now().isoformat(timespec="seconds")
    title = f"Run report: {run.save_dir.resolve()}"
    parts = [
        "<!DOCTYPE html>",
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {generated} by <code>python -m tml.projects.twhin.report</code>.</p>",
        "<h2>Final metrics</h2>",
    ]
    sections = final_metrics(run) + list(extra or [])
    parts += [_table(t, r) for t, r in sections] or ["<p>No metrics recorded.</p>"]
    parts.append("<h2>Plots</h2>")
    for name, caption in plots:
        parts.append(
            f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(run.config_text)}</pre>", "</body></html>"]
    write_text_atomically(path, "\n".join(parts) + "\n")
    return path

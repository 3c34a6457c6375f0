"""The report's PNG figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function draws one figure from `RunData` and returns its path, or None when the run has
nothing to show for it (e.g. no validation records).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tml.projects.twhin.run_report.run_data import RunData

RANKING_METRICS = ("mrr", "hits@1", "hits@3", "hits@10", "auc", "negatives_auc")
MAX_LEGEND_CLASSES = 20
DPI = 110


def _figure(panels: int = 1, width: float = 7.0, height: float = 4.0) -> tuple[Figure, list[Axes]]:
    """A figure of `panels` axes, three to a row, each `width` x `height` inches."""
    columns = min(panels, 3)
    rows = -(-panels // columns)
    figure = Figure(figsize=(width * columns, height * rows))
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(rows, columns, i + 1) for i in range(panels)]


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def plot_loss(run: RunData, path: Path) -> Path | None:
    """Training loss (per log window) and validation loss over steps."""
    metrics = run.metrics
    if not metrics.train:
        return None
    figure, (axes,) = _figure()
    axes.plot(*_series(metrics.train, "loss"), label="train (log window mean)")
    if metrics.validation:
        axes.plot(*_series(metrics.validation, "loss"), "o-", label="validation")
    axes.set(xlabel="step", ylabel="loss", title=f"Loss ({run.config.model.loss})")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_eval_metrics(run: RunData, path: Path) -> Path | None:
    """Validation ranking metrics and AUCs over steps (all in [0, 1])."""
    records = run.metrics.validation
    present = [m for m in RANKING_METRICS if any(m in r for r in records)]
    if not present:
        return None
    figure, (axes,) = _figure()
    for metric in present:
        axes.plot(*_series(records, metric), "o-", label=metric, markersize=3)
    axes.set(xlabel="step", ylabel="value", ylim=(0, 1.02), title="Validation metrics")
    axes.grid(alpha=0.3)
    axes.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8
    )  # beside, not over, the lines
    return _save(figure, path)


def plot_throughput(run: RunData, path: Path) -> Path | None:
    """Edges per second (all ranks) over steps."""
    if not run.metrics.train:
        return None
    figure, (axes,) = _figure()
    axes.plot(*_series(run.metrics.train, "edges_per_s"), label="edges/s, all ranks")
    axes.set(xlabel="step", ylabel="edges / s", title="Training throughput")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_learning_rates(run: RunData, path: Path) -> Path | None:
    """Each optimizer group's learning rate over steps."""
    records = [r for r in run.metrics.train if isinstance(r.get("lr"), dict)]
    if not records:
        return None
    figure, (axes,) = _figure()
    for group in records[0]["lr"]:
        axes.plot([r["step"] for r in records], [r["lr"].get(group) for r in records], label=group)
    axes.set(xlabel="step", ylabel="learning rate", title="Learning rates")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_norms_over_steps(run: RunData, path: Path) -> Path | None:
    """Mean and max row norm of each table at each checkpoint."""
    records = run.metrics.embeddings
    if not records:
        return None
    figure, (axes,) = _figure()
    for table in run.tables:
        steps = [r["step"] for r in records if table.name in r]
        line = axes.plot(steps, [r[table.name]["mean_norm"] for r in records if table.name in r],
                         label=f"{table.name} mean")[0]  # fmt: skip
        axes.plot(steps, [r[table.name]["max_norm"] for r in records if table.name in r], "--",
                  color=line.get_color(), label=f"{table.name} max")  # fmt: skip
    axes.set(xlabel="step", ylabel="row L2 norm", title="Embedding norms at checkpoints")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_norm_histograms(run: RunData, path: Path) -> Path | None:
    """Distribution of the exported rows' L2 norms, one panel per table."""
    figure, axes = _figure(len(run.tables), width=4.5, height=3.5)
    for table, ax in zip(run.tables, axes, strict=True):
        ax.hist(table.norms, bins=50, color="tab:blue")
        ax.axvline(float(np.mean(table.norms)), color="tab:red", label="mean")
        ax.set(
            xlabel="row L2 norm", ylabel="rows", title=f"{table.name} ({len(table.norms):,} rows)"
        )
        ax.legend(fontsize=8)
    return _save(figure, path)


def _pca(vectors: np.ndarray) -> tuple[np.ndarray, float]:
    """2-D coordinates and the share of variance they explain."""
    centred = vectors - vectors.mean(0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    explained = float((singular[:2] ** 2).sum() / max((singular**2).sum(), 1e-12))
    return centred @ components[:2].T, explained


def _scatter(ax: Axes, points: np.ndarray, labels: np.ndarray, kind: str) -> None:
    """A legend for a few classes; a colour bar when there are too many to name."""
    classes = np.unique(labels)
    if len(classes) > MAX_LEGEND_CLASSES:
        drawn = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab20", s=6, alpha=0.7)
        ax.figure.colorbar(drawn, ax=ax, label=kind)
        return
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for index, value in enumerate(classes):
        name = "unknown" if str(value) == "-1" else str(value)
        mine = points[labels == value]
        ax.scatter(mine[:, 0], mine[:, 1], s=6, alpha=0.7, color=palette(index), label=name)
    ax.legend(title=kind, fontsize=6, title_fontsize=7, markerscale=2, ncol=2, framealpha=0.6)


def plot_projections(run: RunData, path: Path) -> Path | None:
    """PCA of sampled rows: per table by planted community (synthetic graph), otherwise all
    tables of one width together, coloured by entity type."""
    panels: list[tuple[str, np.ndarray, np.ndarray, str]] = [
        (t.name, t.vectors, t.labels, "community") for t in run.tables if t.labels is not None
    ]
    if not panels and len({t.vectors.shape[1] for t in run.tables}) == 1:
        vectors = np.concatenate([t.vectors for t in run.tables])
        types = np.concatenate([np.full(len(t.rows), t.name) for t in run.tables])
        title = "all tables" if len(run.tables) > 1 else run.tables[0].name
        panels = [(title, vectors, types, "entity type")]
    elif not panels:
        panels = [(t.name, t.vectors, np.full(len(t.rows), t.name), "table") for t in run.tables]
    figure, axes = _figure(len(panels), width=5.0, height=4.5)
    for (title, vectors, labels, kind), ax in zip(panels, axes, strict=True):
        points, explained = _pca(vectors)
        _scatter(ax, points, labels, kind)
        ax.set(xlabel="PC 1", ylabel="PC 2",
               title=f"{title}: PCA of {len(vectors):,} rows ({explained:.0%} of variance)")  # fmt: skip
    return _save(figure, path)


PLOTS: list[tuple[str, str, Callable[[RunData, Path], Path | None]]] = [
    ("loss.png", "Loss", plot_loss),
    ("eval_metrics.png", "Validation metrics", plot_eval_metrics),
    ("throughput.png", "Throughput", plot_throughput),
    ("learning_rates.png", "Learning rates", plot_learning_rates),
    ("norms_over_steps.png", "Embedding norms over training", plot_norms_over_steps),
    ("norm_histograms.png", "Embedding norm histograms", plot_norm_histograms),
    ("projection.png", "2-D projection of the embeddings", plot_projections),
]
"""(file name, caption, function), in the order the page shows them."""

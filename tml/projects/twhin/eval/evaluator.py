"""Ranking evaluation of a trained model on a split, for training's validation and `evaluate`.

The rows come from a row source (row_sources.py): the sharded model during training, the
checkpoint read in windows by `evaluate` (one process, or N under torchrun). Every rank reads the
evaluated edges and the known edges that can filter them (sharded_ranking.py ranks them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from tml.projects.twhin.artifacts.checkpoints import load_dense, resolve_checkpoint
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.dataset import EdgeDataset, make_dataset
from tml.projects.twhin.data.files import DataError
from tml.projects.twhin.eval.ranking import KnownEdges
from tml.projects.twhin.eval.row_sources import CheckpointRows, RowSource
from tml.projects.twhin.eval.sharded_ranking import rank_edges
from tml.projects.twhin.models.scorer import EdgeScorer

log = logging.getLogger(__name__)

SPLITS = {"valid": "validation_data", "test": "test_data"}
KNOWN_SECTIONS = ("train_data", "validation_data", "test_data")


def scorer_with_state(config: TwhinConfig, dense: dict[str, torch.Tensor]) -> EdgeScorer:
    """An EdgeScorer holding the trained relation parameters (`scorer.`-prefixed state)."""
    scorer = EdgeScorer(config.model)
    scorer.load_state_dict({key.removeprefix("scorer."): value for key, value in dense.items()})
    return scorer.eval()


def _member(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """values[i] in sorted_keys, by binary search."""
    found = np.searchsorted(sorted_keys, values).clip(max=max(len(sorted_keys) - 1, 0))
    return sorted_keys[found] == values if len(sorted_keys) else np.zeros(len(values), bool)


class RankingEvaluator:
    """Ranks the first `max_edges` edges of a section (all by default); reads them, and the
    known edges that can filter them, once and keeps them for every later evaluation."""

    def __init__(self, config: TwhinConfig, section: str, max_edges: int | None = None) -> None:
        self.config, self.section, self.max_edges = config, section, max_edges
        self._relations = [(rel.lhs, rel.rhs) for rel in config.model.relations]
        self._edges: np.ndarray | None = None
        self._known: KnownEdges | None = None

    def _dataset(self, section: str) -> EdgeDataset:
        data = getattr(self.config, section)
        if data is None:
            raise DataError(f"the config has no {section} section to evaluate")
        return make_dataset(
            self.config.model.graph_shape(), data, section, rank=0, world_size=1,
            seed=self.config.training.seed, shuffle=False,
        )  # fmt: skip

    def _chunks(self, section: str) -> Iterator[np.ndarray]:
        """A section's edges (lhs, rel, rhs) in global order, a row group at a time."""
        dataset = self._dataset(section)
        for piece in dataset.plan.pieces:
            yield dataset.reader.read([piece])

    @property
    def edges(self) -> np.ndarray:
        """The evaluated edges, read no further than needed."""
        if self._edges is None:
            chunks, count = [np.zeros((0, 3), np.int64)], 0
            for chunk in self._chunks(self.section):
                if self.max_edges is not None and count >= self.max_edges:
                    break
                chunks.append(chunk)
                count += len(chunk)
            self._edges = np.concatenate(chunks)[: self.max_edges]
        return self._edges

    @property
    def known(self) -> KnownEdges:
        """The known true edges (of every split) that share a query with the evaluated edges:
        the only ones that can filter their ranking. Streamed; memory holds those edges only."""
        if self._known is None:
            edges = self.edges
            span = max(table.num_embeddings for table in self.config.model.embeddings.tables)
            tail_keys = np.unique(edges[:, 1] * span + edges[:, 0])  # (rel, lhs) asks for tails
            head_keys = np.unique(edges[:, 1] * span + edges[:, 2])  # (rel, rhs) asks for heads
            kept = [np.zeros((0, 3), np.int64)]
            for section in KNOWN_SECTIONS:
                if getattr(self.config, section) is None:
                    continue
                for chunk in self._chunks(section):
                    keep = _member(chunk[:, 1] * span + chunk[:, 0], tail_keys)
                    keep |= _member(chunk[:, 1] * span + chunk[:, 2], head_keys)
                    kept.append(chunk[keep])
            self._known = KnownEdges(np.concatenate(kept))
        return self._known

    def evaluate(
        self, source: RowSource, scorer: EdgeScorer, timeout_s: float = float("inf")
    ) -> dict[str, float]:
        """Rank the edges against the rows of `source` (a collective: every rank calls it)."""
        settings = self.config.evaluation
        return rank_edges(
            source,
            scorer.to(source.device),
            self._relations,
            self.edges,
            self.known if settings.filtered else None,
            auc_negatives=settings.auc_negatives,
            timeout_s=timeout_s,
            seed=self.config.training.seed,
        )


def evaluate_checkpoint(
    save_dir: Path, config: TwhinConfig, split: str, checkpoint: str | None,
    rank: int = 0, world_size: int = 1, device: torch.device | None = None,
) -> dict[str, float | str]:  # fmt: skip
    """Rank a split against a checkpoint's tables, streamed from disk in row windows; with
    `world_size` > 1 (a process group up), each rank reads and scores its 1/N of the rows."""
    path = resolve_checkpoint(RunDir(save_dir), checkpoint)
    evaluator = RankingEvaluator(config, SPLITS[split])
    source = CheckpointRows(path, config.model, rank, world_size, device)
    scorer = scorer_with_state(config, load_dense(config, path))
    log.info("ranking %d %s edges against %s on %d rank(s)", len(evaluator.edges), split, path,
             world_size)  # fmt: skip
    metrics = evaluator.evaluate(source, scorer)
    return {"split": split, "checkpoint": path.name, **metrics}

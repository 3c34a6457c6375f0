"""Ranking evaluation of a trained model: a split's edges against every entity (ranking.py),
filtered by the known edges of every split, for training's validation and for `evaluate`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from tml.projects.twhin.artifacts.checkpoints import load_tables, resolve_checkpoint
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.dataset import make_dataset
from tml.projects.twhin.data.files import DataError
from tml.projects.twhin.eval.ranking import KnownEdges, evaluate_ranking
from tml.projects.twhin.models.scorer import EdgeScorer

log = logging.getLogger(__name__)

SPLITS = {"valid": "validation_data", "test": "test_data"}


def scorer_with_state(config: TwhinConfig, dense: dict[str, torch.Tensor]) -> EdgeScorer:
    """An EdgeScorer holding the trained relation parameters (`scorer.`-prefixed state)."""
    scorer = EdgeScorer(config.model)
    scorer.load_state_dict({key.removeprefix("scorer."): value for key, value in dense.items()})
    return scorer.eval()


class RankingEvaluator:
    """Ranks a split's edges; reads the known edges for filtering once and keeps them."""

    def __init__(self, config: TwhinConfig) -> None:
        self.config = config
        self._known: KnownEdges | None = None

    def edges(self, section: str) -> np.ndarray:
        data = getattr(self.config, section)
        if data is None:
            raise DataError(f"the config has no {section} section to evaluate")
        return make_dataset(
            self.config.model.graph_shape(), data, section, rank=0, world_size=1,
            seed=self.config.training.seed, shuffle=False,
        ).all_edges()  # fmt: skip

    def known(self) -> KnownEdges:
        if self._known is None:
            sections = ("train_data", "validation_data", "test_data")
            present = [s for s in sections if getattr(self.config, s) is not None]
            self._known = KnownEdges(np.concatenate([self.edges(s) for s in present]))
        return self._known

    def evaluate(
        self,
        tables: dict[str, torch.Tensor],
        scorer: EdgeScorer,
        section: str,
        max_edges: int | None = None,
        timeout_s: float = float("inf"),
    ) -> dict[str, float]:
        edges = self.edges(section)[:max_edges]
        settings = self.config.evaluation
        return evaluate_ranking(
            scorer,
            tables,
            edges,
            self.known() if settings.filtered else None,
            auc_negatives=settings.auc_negatives,
            timeout_s=timeout_s,
            seed=self.config.training.seed,
        )


def evaluate_checkpoint(
    save_dir: Path, config: TwhinConfig, split: str, checkpoint: str | None
) -> dict[str, float | str]:
    path = resolve_checkpoint(RunDir(save_dir), checkpoint)
    tables, dense = load_tables(config, path)
    metrics = RankingEvaluator(config).evaluate(
        tables, scorer_with_state(config, dense), SPLITS[split]
    )
    return {"split": split, "checkpoint": path.name, **metrics}

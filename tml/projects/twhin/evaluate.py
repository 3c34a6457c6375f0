"""Evaluate a trained run on its validation or test edges: filtered MRR, Hits@k, mean rank, AUC.

    python -m tml.projects.twhin.evaluate --save_dir D [--config_yaml_path P]
        [--split valid|test] [--checkpoint step_N]

Offline (no process group): full tables are assembled from the sharded checkpoint, whatever
world size wrote it. Prints one JSON line and writes it to `D/eval/<split>.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from tml.core.config import ConfigError, load_config
from tml.core.files import write_text_atomically
from tml.projects.twhin.artifacts.checkpoints import load_tables, resolve_checkpoint
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.dataset import make_dataset
from tml.projects.twhin.data.files import DataError
from tml.projects.twhin.models.scorer import EdgeScorer
from tml.projects.twhin.ranking import KnownEdges, evaluate_ranking

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--save_dir", required=True, help="The run's save dir.")
    parser.add_argument(
        "--config_yaml_path", default=None, help="Config (default: the run's config.yaml)."
    )
    parser.add_argument("--split", choices=sorted(SPLITS), default="valid")
    parser.add_argument("--checkpoint", default=None, help="step_N (default: the newest).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    save_dir = Path(args.save_dir)
    try:
        config = load_config(TwhinConfig, args.config_yaml_path or RunDir(save_dir).config)
        result = evaluate_checkpoint(save_dir, config, args.split, args.checkpoint)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    line = json.dumps(result)
    out = RunDir(save_dir).evaluation(args.split)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The whole TwHIN config file: runtime, training, model, train_data, validation_data."""

from __future__ import annotations

from typing import Literal

import pydantic

from tml.core.config import BaseConfig
from tml.core.training_config import RuntimeConfig, TrainingConfig
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.models.config import TwhinModelConfig

LOSS_PASS_METRICS: dict[str, bool] = {"loss": False, "negatives_auc": True}
RANKING_METRICS: dict[str, bool] = {
    "mrr": True, "hits@1": True, "hits@3": True, "hits@10": True, "mean_rank": False, "auc": True,
}  # fmt: skip
VALIDATION_METRICS = LOSS_PASS_METRICS | RANKING_METRICS
"""The quality metrics of a validation record during training (training/validation.py), each
with whether higher is better: what training.early_stopping.metric may name."""


class EvaluationConfig(BaseConfig):
    """How validation and test edges are evaluated (during training and by `evaluate`)."""

    ranking: bool = pydantic.Field(
        True,
        description="Filtered ranking metrics (MRR, Hits@1/3/10, mean rank) against every entity "
        "of the rhs and lhs tables. Each rank scores the rows of its own shards and the counts "
        "are summed, so no process holds a whole table; the cost is compute: queries x rows x "
        "dim per evaluation, split over the ranks.",
    )
    filtered: bool = pydantic.Field(
        True,
        description="Leave out other known true edges (from train, validation and test data) "
        "when ranking; reads all of those edges once.",
    )
    auc_negatives: pydantic.PositiveInt = pydantic.Field(
        100, description="Uniformly drawn entities per ranked edge and side for the sampled AUC."
    )


class WarmStartConfig(BaseConfig):
    """How a warm start (`training.initial_checkpoint_dir`) treats a graph that grew."""

    new_rows: Literal["random", "neighbor_mean"] = pydantic.Field(
        "random",
        description="Rows a table gained since the checkpoint (new entities): `random`, the "
        "usual initialisation; `neighbor_mean`, the mean of the old embeddings of each new "
        "entity's neighbours in train_data, through the relation operators (random where a new "
        "entity has no old neighbour).",
    )
    anchor: pydantic.NonNegativeFloat = pydantic.Field(
        0.0,
        description="λ of an L2 pull of the old rows toward their warm-start values, on the "
        "positives' rows of each step (λ * sum of squared differences, like the N3 term), so "
        "versions stay comparable. 0: off. Keeps a frozen copy of the old rows, sharded like "
        "the tables.",
    )


class TwhinConfig(BaseConfig):
    """Top level of a config YAML (the original TwHIN field set is accepted as is)."""

    runtime: RuntimeConfig = pydantic.Field(
        default_factory=RuntimeConfig, description="Hardware use."
    )
    training: TrainingConfig = pydantic.Field(
        default_factory=TrainingConfig, description="Loop length, logging, checkpoints."
    )
    model: TwhinModelConfig = pydantic.Field(description="Tables, relations, optimizers.")
    train_data: TwhinDataConfig = pydantic.Field(description="Training edges.")
    validation_data: TwhinDataConfig | None = pydantic.Field(
        None, description="Held-out edges, evaluated every training.eval_log_every_n steps."
    )
    test_data: TwhinDataConfig | None = pydantic.Field(
        None, description="Held-out edges for the final figure (`evaluate --split test`)."
    )
    evaluation: EvaluationConfig = pydantic.Field(
        default_factory=EvaluationConfig, description="Evaluation metrics."
    )
    warm_start: WarmStartConfig = pydantic.Field(
        default_factory=WarmStartConfig,
        description="New rows and the anchor of a warm start onto a grown graph.",
    )

    @pydantic.model_validator(mode="after")
    def _train_has_negatives(self) -> TwhinConfig:
        data = self.train_data
        if data.global_negatives == 0 and data.in_batch_negatives == 0:
            raise ValueError(
                "train_data: set global_negatives or in_batch_negatives above 0; without "
                "negatives every score is pushed up and the embeddings learn nothing"
            )
        return self

    @pydantic.model_validator(mode="after")
    def _early_stopping_watches_a_computed_metric(self) -> TwhinConfig:
        stopping = self.training.early_stopping
        if stopping is None:
            return self
        where = "training.early_stopping"
        if stopping.metric not in VALIDATION_METRICS:
            raise ValueError(
                f"{where}.metric: unknown validation metric {stopping.metric!r}; the validation "
                f"during training computes {', '.join(VALIDATION_METRICS)}"
            )
        if self.validation_data is None or self.training.num_eval_steps == 0:
            raise ValueError(
                f"{where}: needs validation during training (validation_data, and "
                "training.num_eval_steps other than 0)"
            )
        if stopping.metric in RANKING_METRICS and not self.evaluation.ranking:
            raise ValueError(
                f"{where}.metric: {stopping.metric} is a ranking metric, which evaluation.ranking: "
                "false turns off; watch loss or negatives_auc, or turn ranking on"
            )
        return self

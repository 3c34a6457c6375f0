"""The whole TwHIN config file: runtime, training, model, train_data, validation_data."""

from __future__ import annotations

from typing import Literal

import pydantic

from tml.core.config import BaseConfig
from tml.core.training_config import RuntimeConfig, TrainingConfig
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.models.config import TwhinModelConfig


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

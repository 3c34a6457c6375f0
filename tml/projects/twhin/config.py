"""The whole TwHIN config file: runtime, training, model, train_data, validation_data."""

from __future__ import annotations

import pydantic

from tml.core.config import BaseConfig
from tml.core.training_config import RuntimeConfig, TrainingConfig
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.models.config import TwhinModelConfig


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
        None, description="Held-out edges for periodic evaluation (loss and AUC)."
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

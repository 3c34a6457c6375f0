"""The `runtime` and `training` config sections, shared by any trainer built on tml.core.

Field names follow the original TwHIN config so its files load unchanged. Fields the original
declared but that cannot work here are accepted only when unset, and rejected with the reason.
"""

from __future__ import annotations

from typing import Any

import pydantic

from tml.core.config import BaseConfig, unsupported_field


class RuntimeConfig(BaseConfig):
    """How the process uses the hardware."""

    enable_amp: bool = unsupported_field(
        "automatic mixed precision does not apply to embedding lookups and dot products; halve "
        "table memory with a table's data_type: fp16 instead",
        default=False,
    )
    enable_tensorfloat32: bool = pydantic.Field(
        False, description="Allow TF32 matmuls on Ampere and newer GPUs (ignored on CPU)."
    )
    wandb: Any = unsupported_field(
        "Weights & Biases logging; metrics are written to <save_dir>/metrics.jsonl"
    )
    threads_per_rank: pydantic.PositiveInt | None = pydantic.Field(
        None,
        description="torch intra-op threads per process. Default: 1 when several ranks share a "
        "CPU machine (torchrun's own default), else all cores. OpenMP spin-waiting is disabled "
        "either way because it made small CPU boxes 10-40x slower.",
    )
    collective_timeout_s: pydantic.PositiveInt = pydantic.Field(
        600, description="Seconds a collective may wait for the other ranks before failing."
    )
    profile_steps: pydantic.NonNegativeInt = pydantic.Field(
        0,
        description="Profile this many steps (after 10 warm-up steps) with torch.profiler and "
        "write <save_dir>/profile/rank_<r>.json: milliseconds per step spent in data, lookup, "
        "scoring, backward_update and communication (plus a Chrome trace of rank 0). 0: off.",
    )


class EarlyStoppingConfig(BaseConfig):
    """Stop when a validation metric has stopped improving, and keep the best checkpoint.

    The best evaluation's checkpoint is kept whatever checkpoint_max_to_keep says
    (`checkpoints/best.json` names it), the final export is that checkpoint's, and the count
    of evaluations without an improvement is saved with every checkpoint, so a resumed run
    stops where an uninterrupted one would.
    """

    metric: str = pydantic.Field(
        "mrr",
        description="The validation metric to watch: a quality metric of the validation "
        "during training (the project lists them, and whether higher or lower is better, in "
        "docs/training.md); other names are refused at load.",
    )
    patience: pydantic.PositiveInt = pydantic.Field(
        3,
        description="Stop after this many evaluations in a row without an improvement (exit 0).",
    )
    min_delta: pydantic.NonNegativeFloat = pydantic.Field(
        0.0,
        description="An evaluation improves only when it beats the best so far by more than "
        "this (absolute, in the metric's units).",
    )


class TrainingConfig(BaseConfig):
    """How long to train, and when to log, evaluate and checkpoint."""

    save_dir: str = pydantic.Field(
        "/tmp/model",
        description="Local directory for checkpoints, metrics and embeddings; --save_dir "
        "overrides it. Mount object storage rather than giving a URL.",
    )
    num_train_steps: pydantic.PositiveInt = pydantic.Field(
        10000,
        description="Stop after this many steps or after num_epochs, whichever comes first.",
    )
    num_epochs: pydantic.PositiveInt = pydantic.Field(
        1, description="Passes over train_data; each pass reshuffles with seed + epoch."
    )
    seed: pydantic.NonNegativeInt = pydantic.Field(
        0, description="Seeds data order, negative sampling and initialisation."
    )
    initial_checkpoint_dir: str | None = pydantic.Field(
        None,
        description="Warm start: a checkpoint directory (…/checkpoints/step_N) whose table "
        "weights (into the first rows of tables that grew since), their per-row optimizer "
        "state and the relation parameters (by relation name) initialise this run; see the "
        "warm_start section. Ignored when save_dir already holds a checkpoint (then the run "
        "resumes).",
    )
    resume_optimizer: bool = pydantic.Field(
        True,
        description="On resume, restore the optimizer state (Adagrad accumulators, steps) with "
        "the weights. Set false to restore only the weights and start the optimizer fresh: "
        "needed when row-wise Adagrad state must move to or from a column_wise table, which "
        "it cannot (the resume says so).",
    )
    checkpoint_every_n: pydantic.PositiveInt = pydantic.Field(
        1000, description="Write a checkpoint every this many steps, and always at the end."
    )
    checkpoint_max_to_keep: pydantic.PositiveInt | None = pydantic.Field(
        None, description="Keep only the newest N checkpoints. Default: keep all."
    )
    train_log_every_n: pydantic.PositiveInt = pydantic.Field(
        1000, description="Log loss, learning rates, edges/s and ETA every this many steps."
    )
    num_eval_steps: int = pydantic.Field(
        16384,
        description="Validation batches per evaluation; negative means the whole validation "
        "set; 0 disables evaluation.",
    )
    eval_log_every_n: pydantic.PositiveInt = pydantic.Field(
        5000, description="Evaluate on validation_data every this many steps, and at the end."
    )
    eval_timeout_in_s: pydantic.PositiveFloat = pydantic.Field(
        3600.0, description="Stop an evaluation early after this many seconds."
    )
    early_stopping: EarlyStoppingConfig | None = pydantic.Field(
        None,
        description="Stop when the validation metric plateaus and export the best checkpoint "
        "instead of the last. Default: off (train to the end, export the last checkpoint).",
    )
    gradient_accumulation: int | None = unsupported_field(
        "fused table optimizers update inside backward, so gradients cannot be accumulated; "
        "raise per_replica_batch_size instead (1 is accepted: no accumulation)",
        harmless=(1,),
    )

    @pydantic.field_validator("save_dir")
    @classmethod
    def _local_save_dir(cls, value: str) -> str:
        if "://" in value:
            raise ValueError(
                f"save_dir must be a local path (got {value!r}); mount object storage as a volume"
            )
        return value

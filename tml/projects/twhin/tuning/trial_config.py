"""One trial's training config: the base config with the sampled values, at a consistent length.

Changing the batch size or the number of epochs changes how many steps a run has, so everything
counted in steps follows: `num_train_steps` is the trial's epochs times its steps per epoch,
log, checkpoint and evaluation cadences keep their length in epochs, warm-ups keep their length
in epochs, and decays (a cosine's end, piecewise boundaries) still end where the run ends.
Evaluations fall every `eval_every_epochs` in every trial, so the pruner compares trials at the
same point of training whatever their batch size.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pydantic
import yaml

from tml.core.config import ConfigError, format_validation_error, load_config
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.files import DataError, list_parquet_files
from tml.projects.twhin.tuning.fields import FieldPathError, read_field, set_field
from tml.projects.twhin.tuning.space import SearchSpace

EPOCHS_FIELD = "training.num_epochs"
# Set by the tuner from the epochs, the batch size and the cadences: tuning them would fight it.
DERIVED_FIELDS = (
    "training.num_train_steps", "training.train_log_every_n", "training.checkpoint_every_n",
    "training.eval_log_every_n", "training.save_dir",
)  # fmt: skip


def count_edges(data: TwhinDataConfig) -> int:
    """Edges a data config selects, from parquet metadata only (offset and limit applied)."""
    fs, files = list_parquet_files(data.data_root)
    total = 0
    for path in files:
        with fs.open(path, "rb") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    selected = max(0, total - data.offset)
    return min(selected, data.limit) if data.limit is not None else selected


@dataclass(frozen=True)
class RunLength:
    """How a trial's epochs and batch size become steps (the trainer's own arithmetic)."""

    train_edges: int
    world_size: int

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, math.ceil(math.ceil(self.train_edges / self.world_size) / batch_size))

    def epochs(self, config: TwhinConfig) -> float:
        """The run length of a config in epochs (the step cap may end it inside an epoch)."""
        per_epoch = self.steps_per_epoch(config.train_data.per_replica_batch_size)
        steps = min(config.training.num_train_steps, config.training.num_epochs * per_epoch)
        return steps / per_epoch


class TrialConfigBuilder:
    """Base config + sampled values -> a validated config dict for one trial."""

    def __init__(
        self,
        base_path: str | Path,
        space: SearchSpace | None = None,
        *,
        world_size: int = 1,
        eval_every_epochs: float | None = None,
    ) -> None:
        self.base_path = Path(base_path)
        self.base = load_config(TwhinConfig, base_path)
        self._raw = yaml.safe_load(self.base_path.read_text())
        self._full = self.base.model_dump(mode="json")
        self._space = space  # may be set later: the default space depends on the run length
        _check_validation(self.base, self.base_path)
        try:
            self.length = RunLength(count_edges(self.base.train_data), world_size)
        except DataError as exc:
            raise ConfigError(f"{self.base_path}: train_data: {exc}") from None
        base_per_epoch = self.length.steps_per_epoch(self.base.train_data.per_replica_batch_size)
        self.base_epochs = self.length.epochs(self.base)
        self.eval_every_epochs = eval_every_epochs or min(
            self.base.training.eval_log_every_n / base_per_epoch, self.base_epochs
        )

    @property
    def space(self) -> SearchSpace:
        if self._space is None:
            raise RuntimeError("TrialConfigBuilder.space is used before it was set")
        return self._space

    @space.setter
    def space(self, space: SearchSpace) -> None:
        self._space = space

    def build(
        self, values: dict[str, Any], save_dir: str | Path, threads: int | None = None
    ) -> dict[str, Any]:
        """The trial's config as a YAML-ready dict; ConfigError naming the parameter on failure."""
        raw = copy.deepcopy(self._raw)
        fields = self._space.fields() if self._space else {}
        for name, value in values.items():
            try:
                set_field(raw, self._full, fields[name], value)
            except FieldPathError as exc:
                raise ConfigError(f"search space parameter {name!r}: {exc}") from None
        sampled = self._validate(raw, values)
        epochs = sampled.training.num_epochs if EPOCHS_FIELD in fields.values() else None
        self._fit_length(raw, sampled, self.base_epochs if epochs is None else epochs)
        raw.setdefault("training", {})["save_dir"] = str(save_dir)
        if threads is not None and self.base.runtime.threads_per_rank is None:
            raw.setdefault("runtime", {})["threads_per_rank"] = threads
        self._validate(raw, values)
        return raw

    def base_point(self) -> dict[str, Any]:
        """The base config's own values of the parameters that can take them: run first, so a
        study never ends below the config it started from."""
        current = {}
        for name, field in self.space.fields().items():
            try:
                current[name] = read_field(self._full, field)
            except FieldPathError:
                continue  # check_space reports it
        return self.space.point(current)

    def check_space(self) -> None:
        """Build a config at each parameter's extremes, so a bad field or range fails at start."""
        derived = set(DERIVED_FIELDS)
        for index, parameter in enumerate(self.space.parameters):
            if parameter.field in derived:
                raise ConfigError(
                    f"search space parameters[{index}].field: {parameter.field} is set by the "
                    f"tuner from {EPOCHS_FIELD} and the batch size; tune those instead"
                )
            for value in parameter.corners():
                try:
                    self.build({parameter.key: value}, "/tmp/unused")
                except ConfigError as exc:
                    raise ConfigError(
                        f"search space parameters[{index}] ({parameter.key}={value!r}): {exc}"
                    ) from None

    def _validate(self, raw: dict[str, Any], values: dict[str, Any]) -> TwhinConfig:
        try:
            return TwhinConfig.model_validate(raw)
        except pydantic.ValidationError as exc:
            raise ConfigError(
                f"the config of {values} is invalid: {format_validation_error(exc)}"
            ) from None

    def _fit_length(self, raw: dict[str, Any], sampled: TwhinConfig, epochs: float) -> None:
        """Steps, cadences and schedules for `epochs` at the sampled batch size."""
        base, length = self.base, self.length
        old_per_epoch = length.steps_per_epoch(base.train_data.per_replica_batch_size)
        per_epoch = length.steps_per_epoch(sampled.train_data.per_replica_batch_size)
        old_total = max(1, round(self.base_epochs * old_per_epoch))
        total = max(1, round(epochs * per_epoch))
        per_epoch_scale, total_scale = per_epoch / old_per_epoch, total / old_total
        training = raw.setdefault("training", {})
        training["num_train_steps"] = total
        training["num_epochs"] = max(1, math.ceil(epochs))
        for name in ("train_log_every_n", "checkpoint_every_n"):
            training[name] = max(1, round(getattr(base.training, name) * per_epoch_scale))
        training["eval_log_every_n"] = max(1, round(self.eval_every_epochs * per_epoch))
        for block in _optimizer_blocks(raw):
            _stretch_schedule(block.get("learning_rate"), per_epoch_scale, total_scale)


def _check_validation(base: TwhinConfig, path: Path) -> None:
    """The objective is validation MRR: the base config must compute it during training."""
    problems = []
    if base.validation_data is None:
        problems.append("validation_data: not set (the objective is validation MRR)")
    if base.training.num_eval_steps == 0:
        problems.append("training.num_eval_steps: 0 turns off the validation the tuner reads")
    if not base.evaluation.ranking:
        problems.append("evaluation.ranking: false, so no validation MRR is computed")
    if problems:
        raise ConfigError(f"{path} cannot be tuned: " + "; ".join(problems))


def _optimizer_blocks(raw: dict[str, Any]) -> list[dict[str, Any]]:
    model = raw.get("model", {})
    tables = model.get("embeddings", {}).get("tables", [])
    blocks = [table.get("optimizer") for table in tables] + [model.get("translation_optimizer")]
    return [block for block in blocks if isinstance(block, dict)]


def _stretch_schedule(schedule: dict[str, Any] | None, ramp: float, total: float) -> None:
    """Warm-ups keep their length in epochs (x ramp); decays end where the run ends (x total)."""
    if not isinstance(schedule, dict):
        return
    if warm := schedule.get("linear_ramp_to_constant"):
        warm["num_ramp_steps"] = max(1, round(warm["num_ramp_steps"] * ramp))
    if cosine := schedule.get("linear_ramp_to_cosine"):
        cosine["num_ramp_steps"] = max(1, round(cosine["num_ramp_steps"] * ramp))
        cosine["final_num_steps"] = max(
            cosine["num_ramp_steps"] + 1, round(cosine["final_num_steps"] * total)
        )
    if piecewise := schedule.get("piecewise_constant"):
        boundaries: list[int] = []
        for boundary in piecewise["learning_rate_boundaries"]:
            boundaries.append(max(round(boundary * total), boundaries[-1] + 1 if boundaries else 0))
        piecewise["learning_rate_boundaries"] = boundaries

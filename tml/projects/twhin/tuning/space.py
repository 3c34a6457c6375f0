"""The search space: which config fields a study tunes, over which ranges, and under what condition.

A search-space file (``--search_space FILE``) is YAML validated like the training config (unknown
keys are errors, messages name the field path)::

    parameters:
      - name: lr.entity                                  # optional; default: the field path
        field: model.embeddings.tables[entity].optimizer.lr
        type: float                                      # float | int | categorical
        low: 0.01
        high: 1.0
        log: true
      - {name: loss, field: model.loss, type: categorical, choices: [softmax, logistic, ranking]}
      - {name: margin, field: model.margin, type: float, low: 0.1, high: 10, log: true,
         when: {loss: [ranking]}}                        # only sampled when loss is ranking

`field` is a config path (`trial_config.py` says how it is applied). Without a file,
`default_space` derives sensible ranges for this model family from the base config.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

import optuna
import pydantic

from tml.core.config import PROBLEM_SEPARATOR, BaseConfig, load_config
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.tuning.fields import peak_rate

Choice = bool | int | float | str


class _Parameter(BaseConfig):
    """Fields every parameter has."""

    name: str | None = pydantic.Field(
        None, description="Name in the study and the trials table; default: `field`."
    )
    field: str = pydantic.Field(
        description="Config path the value sets, e.g. model.regularization, "
        "train_data.global_negatives, model.embeddings.tables[user].optimizer.lr ([name] picks "
        "a list item by name, [0] by position, [*] every item)."
    )
    when: dict[str, list[Choice]] | None = pydantic.Field(
        None,
        description="Sample this parameter only when each named earlier parameter took one of "
        "the listed values (e.g. margin only with loss: [ranking]).",
    )

    @property
    def key(self) -> str:
        return self.name or self.field


class FloatParameter(_Parameter):
    """A real value in [low, high], uniform or log-uniform."""

    type: Literal["float"]
    low: float = pydantic.Field(description="Smallest value.")
    high: float = pydantic.Field(description="Largest value.")
    log: bool = pydantic.Field(False, description="Sample log-uniformly (needs low > 0).")

    @pydantic.model_validator(mode="after")
    def _check_range(self) -> FloatParameter:
        _check_range(self.low, self.high, self.log)
        return self

    def suggest(self, trial: optuna.Trial) -> float:
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def corners(self) -> list[Choice]:
        return [self.low, self.high]


class IntParameter(_Parameter):
    """An integer in [low, high] on a grid of `step`, uniform or log-uniform."""

    type: Literal["int"]
    low: int = pydantic.Field(description="Smallest value.")
    high: int = pydantic.Field(description="Largest value.")
    step: pydantic.PositiveInt = pydantic.Field(1, description="Grid spacing from low.")
    log: bool = pydantic.Field(False, description="Sample log-uniformly (needs low > 0, step 1).")

    @pydantic.model_validator(mode="after")
    def _check_range(self) -> IntParameter:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("step: must be 1 with log: true (Optuna's rule)")
        return self

    def suggest(self, trial: optuna.Trial) -> int:
        return trial.suggest_int(self.key, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int) and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )  # fmt: skip

    def corners(self) -> list[Choice]:
        return [self.low, self.high]


class CategoricalParameter(_Parameter):
    """One of a list of values."""

    type: Literal["categorical"]
    choices: list[Choice] = pydantic.Field(min_length=1, description="The values to pick from.")

    def suggest(self, trial: optuna.Trial) -> Choice:
        return cast(Choice, trial.suggest_categorical(self.key, self.choices))

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def corners(self) -> list[Choice]:
        return list(self.choices)


def _condition_holds(parameter: _Parameter, values: dict[str, Choice]) -> bool:
    return all(values.get(name) in allowed for name, allowed in (parameter.when or {}).items())


def _check_range(low: float, high: float, log: bool) -> None:
    if high < low:
        raise ValueError(f"high: must be at least low ({low}), got {high}")
    if log and low <= 0:
        raise ValueError(f"low: must be above 0 with log: true, got {low}")


def _parameter_type(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    # Capitalised tags are left out of error paths by tml.core.config (parameters[2].low).
    return {"float": "Float", "int": "Int", "categorical": "Categorical"}.get(str(kind))


Parameter = Annotated[
    Annotated[FloatParameter, pydantic.Tag("Float")]
    | Annotated[IntParameter, pydantic.Tag("Int")]
    | Annotated[CategoricalParameter, pydantic.Tag("Categorical")],
    pydantic.Discriminator(
        _parameter_type,
        custom_error_type="parameter_type",
        custom_error_message="type: must be float, int or categorical",
    ),
]


class SearchSpace(BaseConfig):
    """The parameters a study samples for each trial, in order (a `when` names earlier ones)."""

    parameters: list[Parameter] = pydantic.Field(min_length=1, description="What to tune.")

    @pydantic.model_validator(mode="after")
    def _names_and_conditions(self) -> SearchSpace:
        problems = []
        seen: dict[str, _Parameter] = {}
        for index, parameter in enumerate(self.parameters):
            where = f"parameters[{index}]"
            if parameter.key in seen:
                problems.append(f"{where}.name: {parameter.key!r} is used twice")
            for other, values in (parameter.when or {}).items():
                earlier = seen.get(other)
                if earlier is None:
                    problems.append(f"{where}.when: {other!r} is not an earlier parameter")
                elif isinstance(earlier, CategoricalParameter) and (
                    missing := [v for v in values if v not in earlier.choices]
                ):
                    problems.append(f"{where}.when.{other}: {missing} not among its choices")
            seen[parameter.key] = parameter
        if problems:
            raise ValueError(PROBLEM_SEPARATOR.join(problems))
        return self

    def sample(self, trial: optuna.Trial) -> dict[str, Choice]:
        """Suggest every parameter whose condition holds; returns {name: value}."""
        values: dict[str, Choice] = {}
        for parameter in self.parameters:
            if _condition_holds(parameter, values):
                values[parameter.key] = parameter.suggest(trial)
        return values

    def point(self, current: dict[str, list[Any]]) -> dict[str, Choice]:
        """The point of this space that `current` ({name: the config's values}) is: each
        parameter whose condition holds and whose one current value lies in its range."""
        values: dict[str, Choice] = {}
        for parameter in self.parameters:
            found = current.get(parameter.key, [])
            if (_condition_holds(parameter, values) and len(set(found)) == 1
                    and parameter.contains(found[0])):  # fmt: skip
                values[parameter.key] = found[0]
        return values

    def fields(self) -> dict[str, str]:
        """{parameter name: config field}."""
        return {parameter.key: parameter.field for parameter in self.parameters}

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


def describe(parameter: Parameter) -> str:
    """One line: the field, its range or choices, and its condition."""
    if isinstance(parameter, CategoricalParameter):
        text = f"one of {parameter.choices}"
    else:
        step = getattr(parameter, "step", 1)
        step_text = f", step {step}" if step != 1 else ""
        text = f"{parameter.type} in [{parameter.low}, {parameter.high}]"
        text += (", log" if parameter.log else "") + step_text
    return parameter.field + " " + text + (f" when {parameter.when}" if parameter.when else "")


def format_values(values: dict[str, Choice]) -> str:
    """`name=value` pairs for logs and file headers, floats to 4 significant digits."""
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def load_space(path: str) -> SearchSpace:
    """Read and validate a search-space file (ConfigError naming the file and field)."""
    return load_config(SearchSpace, path)


def default_space(base: TwhinConfig, max_epochs: int) -> SearchSpace:
    """Ranges for this model family around the base config: learning rates per table and for the
    relations, N3 regularisation, uniform and in-batch negatives, loss (margin with ranking),
    batch size and epochs up to `max_epochs`. Never the embedding dimension: trials stay
    comparable with the base at its size (tune it with a search-space file)."""
    parameters: list[dict[str, Any]] = []
    for table in base.model.embeddings.tables:
        parameters.append(
            _around(f"lr.{table.name}", f"model.embeddings.tables[{table.name}].optimizer.lr",
                    peak_rate(table.optimizer.model_dump()))
        )  # fmt: skip
    parameters.append(
        _around("lr.relations", "model.translation_optimizer.lr",
                peak_rate(base.model.translation_optimizer.model_dump()))
    )  # fmt: skip
    batch = base.train_data.per_replica_batch_size
    parameters += [
        {"name": "regularization", "field": "model.regularization", "type": "float",
         "low": 1e-5, "high": 0.3, "log": True},
        {"name": "global_negatives", "field": "train_data.global_negatives", "type": "int",
         "low": 8, "high": 512, "log": True},
        {"name": "in_batch_negatives", "field": "train_data.in_batch_negatives", "type": "int",
         "low": 0, "high": 100, "step": 10},
        {"name": "loss", "field": "model.loss", "type": "categorical",
         "choices": ["softmax", "logistic", "ranking"]},
        {"name": "margin", "field": "model.margin", "type": "float", "low": 0.1, "high": 10.0,
         "log": True, "when": {"loss": ["ranking"]}},
        {"name": "batch_size", "field": "train_data.per_replica_batch_size", "type": "int",
         "low": max(1, batch // 2), "high": batch * 4, "log": True},
        {"name": "epochs", "field": "training.num_epochs", "type": "int",
         "low": max(1, max_epochs // 4), "high": max_epochs},
    ]  # fmt: skip
    return SearchSpace.model_validate({"parameters": parameters})


def _around(name: str, field: str, rate: float) -> dict[str, Any]:
    """A log range from a tenth to five times the base learning rate."""
    rate = rate if rate > 0 else 0.1
    return {"name": name, "field": field, "type": "float", "low": _round(rate / 10),
            "high": _round(rate * 5), "log": True}  # fmt: skip


def _round(value: float) -> float:
    return float(f"{value:.3g}")

"""Learning-rate schedules, configured per optimizer and evaluated per step.

The schedule is a pure function of the 0-based global step, so a resumed run computes exactly the
learning rates an uninterrupted run would have, with no scheduler state to checkpoint.
"""

from __future__ import annotations

import bisect
import math

import pydantic

from tml.core.config import BaseConfig, require_exactly_one


class PiecewiseConstant(BaseConfig):
    """`learning_rate_values[i]` applies while `step < learning_rate_boundaries[i]`."""

    learning_rate_boundaries: list[pydantic.NonNegativeInt] = pydantic.Field(
        description="Increasing steps at which the learning rate changes."
    )
    learning_rate_values: list[pydantic.NonNegativeFloat] = pydantic.Field(
        description="One more value than boundaries: the rate before the first boundary, "
        "between each pair, and after the last."
    )

    @pydantic.model_validator(mode="after")
    def _check_lengths(self) -> PiecewiseConstant:
        if len(self.learning_rate_values) != len(self.learning_rate_boundaries) + 1:
            raise ValueError(
                "learning_rate_values needs exactly one more entry than learning_rate_boundaries "
                f"(got {len(self.learning_rate_values)} values, "
                f"{len(self.learning_rate_boundaries)} boundaries)"
            )
        if sorted(set(self.learning_rate_boundaries)) != self.learning_rate_boundaries:
            raise ValueError("learning_rate_boundaries must be strictly increasing")
        return self


class LinearRampToConstant(BaseConfig):
    """Ramp linearly from near zero to `learning_rate` over `num_ramp_steps`, then hold."""

    learning_rate: pydantic.NonNegativeFloat = pydantic.Field(description="Rate after the ramp.")
    num_ramp_steps: pydantic.PositiveInt = pydantic.Field(description="Steps of the ramp.")


class LinearRampToCosine(BaseConfig):
    """Linear ramp to `learning_rate`, then cosine decay to `final_learning_rate` at
    `final_num_steps`, then hold."""

    learning_rate: pydantic.NonNegativeFloat = pydantic.Field(description="Peak rate.")
    final_learning_rate: pydantic.NonNegativeFloat = pydantic.Field(
        description="Rate at and after `final_num_steps`."
    )
    num_ramp_steps: pydantic.PositiveInt = pydantic.Field(description="Steps of the ramp.")
    final_num_steps: pydantic.PositiveInt = pydantic.Field(
        description="Step at which the cosine decay ends (counted from step 0)."
    )

    @pydantic.model_validator(mode="after")
    def _check_order(self) -> LinearRampToCosine:
        if self.final_num_steps <= self.num_ramp_steps:
            raise ValueError("final_num_steps must be greater than num_ramp_steps")
        return self


class LearningRate(BaseConfig):
    """Exactly one schedule. Omit the whole block to keep the optimizer's `lr` constant."""

    constant: pydantic.NonNegativeFloat | None = pydantic.Field(
        None, description="A fixed learning rate."
    )
    linear_ramp_to_constant: LinearRampToConstant | None = pydantic.Field(
        None, description="Warm-up then constant."
    )
    linear_ramp_to_cosine: LinearRampToCosine | None = pydantic.Field(
        None, description="Warm-up then cosine decay."
    )
    piecewise_constant: PiecewiseConstant | None = pydantic.Field(
        None, description="Step function."
    )

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> LearningRate:
        require_exactly_one(self, list(type(self).model_fields))
        return self


def learning_rate_at(schedule: LearningRate, step: int) -> float:
    """The learning rate for the 0-based `step`.

    Ramps use `step + 1` so the very first step already learns (the original TwHIN formula gave 0
    at step 0, wasting it).
    """
    if schedule.constant is not None:
        return schedule.constant
    if (piecewise := schedule.piecewise_constant) is not None:
        index = bisect.bisect_right(piecewise.learning_rate_boundaries, step)
        return piecewise.learning_rate_values[index]
    if (ramp := schedule.linear_ramp_to_constant) is not None:
        return ramp.learning_rate * min(1.0, (step + 1) / ramp.num_ramp_steps)
    cosine = schedule.linear_ramp_to_cosine
    assert cosine is not None  # guaranteed by LearningRate._exactly_one
    if step + 1 < cosine.num_ramp_steps:
        return cosine.learning_rate * (step + 1) / cosine.num_ramp_steps
    if step >= cosine.final_num_steps:
        return cosine.final_learning_rate
    progress = (step - cosine.num_ramp_steps + 1) / (
        cosine.final_num_steps - cosine.num_ramp_steps + 1
    )
    progress = min(max(progress, 0.0), 1.0)
    span = cosine.learning_rate - cosine.final_learning_rate
    return cosine.final_learning_rate + span * 0.5 * (1.0 + math.cos(math.pi * progress))

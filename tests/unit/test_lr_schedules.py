"""Behavioural tests of the per-step learning-rate schedules and their config validation."""

from __future__ import annotations

import math

import pydantic
import pytest

from tml.core.lr_schedules import LearningRate, learning_rate_at
from tml.core.optimizers import OptimizerConfig


def rates(schedule: LearningRate, steps: int) -> list[float]:
    return [learning_rate_at(schedule, step) for step in range(steps)]


def test_constant_is_the_same_at_every_step():
    schedule = LearningRate(constant=0.05)
    assert rates(schedule, 5) == [0.05] * 5
    assert learning_rate_at(schedule, 10**9) == 0.05


def test_constant_zero_is_a_valid_schedule():
    assert learning_rate_at(LearningRate(constant=0.0), 3) == 0.0


def test_piecewise_constant_changes_value_exactly_at_each_boundary():
    schedule = LearningRate(
        piecewise_constant={
            "learning_rate_boundaries": [3, 7],
            "learning_rate_values": [1.0, 0.5, 0.1],
        }
    )
    assert rates(schedule, 10) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1]
    assert learning_rate_at(schedule, 10**6) == 0.1


def test_piecewise_constant_with_a_boundary_at_zero_never_uses_the_first_value():
    schedule = LearningRate(
        piecewise_constant={"learning_rate_boundaries": [0], "learning_rate_values": [9.0, 2.0]}
    )
    assert rates(schedule, 3) == [2.0, 2.0, 2.0]


def test_linear_ramp_to_constant_learns_at_step_zero_and_holds_after_the_ramp():
    schedule = LearningRate(linear_ramp_to_constant={"learning_rate": 0.8, "num_ramp_steps": 4})
    values = rates(schedule, 8)
    assert values[0] > 0.0
    assert values[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert values[3] == 0.8  # reaches the rate at num_ramp_steps - 1 ...
    assert values[4:] == [0.8] * 4  # ... and stays there
    assert all(a < b for a, b in zip(values[:3], values[1:4], strict=True))


def test_linear_ramp_to_constant_with_one_ramp_step_is_constant():
    schedule = LearningRate(linear_ramp_to_constant={"learning_rate": 0.3, "num_ramp_steps": 1})
    assert rates(schedule, 3) == [0.3, 0.3, 0.3]


def test_linear_ramp_to_cosine_ramps_peaks_decays_monotonically_then_holds_the_final_rate():
    peak, final, ramp, end = 1.0, 0.1, 5, 25
    schedule = LearningRate(
        linear_ramp_to_cosine={
            "learning_rate": peak,
            "final_learning_rate": final,
            "num_ramp_steps": ramp,
            "final_num_steps": end,
        }
    )
    values = rates(schedule, end + 10)

    # ramp: starts above zero, increases linearly, peaks at step ramp - 1
    assert values[:ramp] == pytest.approx([peak * (s + 1) / ramp for s in range(ramp)])
    assert values[0] > 0.0
    assert values[ramp - 1] == pytest.approx(peak)
    assert max(values) == pytest.approx(peak)

    # decay: strictly decreasing from the peak to the final rate, staying between the two
    decay = values[ramp - 1 : end + 1]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert all(final <= v <= peak for v in decay)
    # half-way through the decay the cosine is at the midpoint
    midpoint = values[ramp - 1 + (end - ramp + 1) // 2]
    assert midpoint == pytest.approx((peak + final) / 2, abs=0.1)

    # after final_num_steps: exactly the final rate
    assert values[end:] == [final] * 10
    assert values[end - 1] > final


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({}, "set exactly one of"),
        (
            {"constant": 0.1, "linear_ramp_to_constant": {"learning_rate": 1, "num_ramp_steps": 2}},
            "set exactly one of",
        ),
        (
            {
                "piecewise_constant": {
                    "learning_rate_boundaries": [5],
                    "learning_rate_values": [1.0],
                }
            },
            "exactly one more entry",
        ),
        (
            {
                "piecewise_constant": {
                    "learning_rate_boundaries": [5],
                    "learning_rate_values": [1.0, 0.5, 0.1],
                }
            },
            "exactly one more entry",
        ),
        (
            {
                "piecewise_constant": {
                    "learning_rate_boundaries": [5, 5],
                    "learning_rate_values": [1.0, 0.5, 0.1],
                }
            },
            "strictly increasing",
        ),
        (
            {
                "piecewise_constant": {
                    "learning_rate_boundaries": [9, 5],
                    "learning_rate_values": [1.0, 0.5, 0.1],
                }
            },
            "strictly increasing",
        ),
        (
            {
                "linear_ramp_to_cosine": {
                    "learning_rate": 1.0,
                    "final_learning_rate": 0.1,
                    "num_ramp_steps": 10,
                    "final_num_steps": 10,
                }
            },
            "final_num_steps must be greater than num_ramp_steps",
        ),
        (
            {
                "linear_ramp_to_cosine": {
                    "learning_rate": 1.0,
                    "final_learning_rate": 0.1,
                    "num_ramp_steps": 10,
                    "final_num_steps": 4,
                }
            },
            "final_num_steps must be greater than num_ramp_steps",
        ),
        ({"linear_ramp_to_constant": {"learning_rate": 1, "num_ramp_steps": 0}}, "num_ramp_steps"),
        ({"constant": -0.1}, "constant"),
    ],
    ids=[
        "none_set",
        "two_set",
        "too_few_values",
        "too_many_values",
        "repeated_boundary",
        "decreasing_boundaries",
        "final_equals_ramp",
        "final_before_ramp",
        "zero_ramp_steps",
        "negative_rate",
    ],
)
def test_invalid_schedule_is_rejected(schedule, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        LearningRate.model_validate(schedule)


def test_optimizer_without_learning_rate_block_follows_a_constant_schedule_at_its_lr():
    for algorithm in ("sgd", "adagrad", "rowwise_adagrad", "adam"):
        config = OptimizerConfig.model_validate({algorithm: {"lr": 0.25}})
        schedule = config.schedule()
        assert schedule.constant == 0.25
        assert rates(schedule, 3) == [0.25, 0.25, 0.25]


def test_optimizer_learning_rate_block_overrides_lr():
    config = OptimizerConfig.model_validate(
        {
            "sgd": {"lr": 0.25},
            "learning_rate": {
                "linear_ramp_to_constant": {"learning_rate": 1.0, "num_ramp_steps": 2}
            },
        }
    )
    assert rates(config.schedule(), 3) == [0.5, 1.0, 1.0]


def test_schedules_are_pure_functions_of_the_step():
    schedule = LearningRate(
        linear_ramp_to_cosine={
            "learning_rate": 1.0,
            "final_learning_rate": 0.0,
            "num_ramp_steps": 3,
            "final_num_steps": 50,
        }
    )
    forward = rates(schedule, 60)
    backward = [learning_rate_at(schedule, step) for step in reversed(range(60))][::-1]
    assert forward == backward
    assert all(math.isfinite(v) for v in forward)

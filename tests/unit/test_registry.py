"""Registries are typed and strict: one class per name, unknown names list the choices."""

from __future__ import annotations

import pytest

from tml.core.optimizers import ALGORITHMS, OptimizerConfig
from tml.core.registry import Registry
from tml.projects.twhin.models.comparators import COMPARATORS, Comparator
from tml.projects.twhin.models.losses import LOSSES, Loss
from tml.projects.twhin.models.operators import OPERATORS, RelationOperator


class Shape:
    name: str


def test_a_second_class_under_a_taken_name_is_refused() -> None:
    shapes: Registry[Shape] = Registry("shape")

    @shapes.register("square")
    class Square(Shape):
        pass

    with pytest.raises(ValueError, match="shape 'square' is already registered to .*Square"):

        @shapes.register("square")
        class OtherSquare(Shape):
            pass

    assert shapes["square"] is Square and Square.name == "square"


def test_an_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown operator 'rotation'; choose one of identity, "):
        OPERATORS.check("rotation")
    with pytest.raises(KeyError, match="choose one of dot, cos, l2, l1"):
        COMPARATORS["hamming"]
    assert "dot" in COMPARATORS and "hamming" not in COMPARATORS


@pytest.mark.parametrize("base", [RelationOperator, Comparator, Loss])
def test_bases_declare_what_a_component_must_implement(base: type) -> None:
    with pytest.raises(TypeError, match="abstract"):
        base(4, 4) if base is RelationOperator else base()


def test_registered_components_are_subclasses_of_their_base() -> None:
    for registry, base in ((OPERATORS, RelationOperator), (COMPARATORS, Comparator),
                           (LOSSES, Loss)):  # fmt: skip
        assert registry and all(issubclass(cls, base) for cls in registry.values())


def test_every_optimizer_algorithm_is_a_block_of_the_optimizer_config() -> None:
    blocks = [name for name in OptimizerConfig.model_fields if name != "learning_rate"]
    assert list(ALGORITHMS) == blocks
    config = OptimizerConfig.model_validate({"rowwise_adagrad": {"lr": 0.1}})
    assert config.algorithm_name == "rowwise_adagrad" and config.algorithm.lr == 0.1

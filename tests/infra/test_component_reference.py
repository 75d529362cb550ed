"""Every component is reusable as documented: a docstring saying what it guarantees, a frozen `<Component>Args`
dataclass with typed fields, the `(name, args, opts)` signature, typed outputs; and the README's table of them is
the one the code generates."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from infra import markers, offline, reference

README = offline.ROOT / "README.md"
COMPONENTS = reference.components()


def test_the_readme_shows_exactly_the_component_table_the_code_generates():
    assert markers.between(README.read_text(), reference.TABLE_START, reference.TABLE_END) == (
        reference.render_markdown()
    ), "README component table is stale: run python -m infra.reference --write README.md"


def test_every_component_of_the_package_is_found():
    names = {c.cls.__name__ for c in COMPONENTS}
    assert names >= {
        "Network", "RegionKey", "Cluster", "NodePool", "ModelStore", "ServingAccess", "RegionalIngress", "GeoDns",
        "GeoLoadBalancer", "ModelReplication", "Publishers", "ClusterAddons", "Mesh", "ServingWorkload", "PublicEntry",
    }  # fmt: skip


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.cls.__name__)
def test_a_component_states_its_guarantee_and_takes_typed_frozen_args(component):
    assert len(component.guarantee) > 30, f"{component.cls.__name__} needs a docstring saying what it guarantees"
    args, args_name = component.args, component.args.__name__
    assert dataclasses.is_dataclass(args) and vars(args)["__dataclass_params__"].frozen
    for field in dataclasses.fields(args):
        assert field.type and field.type != "Any", f"{args_name}.{field.name} is untyped"
    parameters = inspect.signature(component.cls.__init__).parameters
    assert list(parameters) == ["self", "name", "args", "opts"]
    assert parameters["args"].annotation == args_name
    for name, kind in component.outputs.items():
        assert kind, f"{component.cls.__name__}.{name} is an untyped output"


def test_the_table_escapes_union_types_so_each_row_keeps_its_columns():
    for row in reference.render_markdown().splitlines()[5:]:
        assert row.replace("\\|", "").count("|") == 5, row

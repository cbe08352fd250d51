"""The public façade: exactly these names, each importable, and what other modules rely on."""

from __future__ import annotations

import inspect

from pappus import composition

PUBLIC = {
    "AnySharding", "AnyShardingMode", "Application", "Binding", "BoundSet", "CallFunction",
    "CompositionDef", "CompositionGraph", "FunctionDecl", "InputDescriptor", "JoinClause",
    "JoinKind", "JoinPlan", "Lookup", "Module", "Name", "OutputDescriptor", "Position",
    "Sharding", "Signature", "Statement", "build_compositions", "parse_any_sharding_mode",
    "parse_module", "plan_shards", "run_composition",
}


def test_exported_names() -> None:
    assert set(composition.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(composition, name) is not None


def test_public_callables_have_docstrings() -> None:
    for name in PUBLIC:
        value = getattr(composition, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name


def test_signatures_the_dispatcher_and_registry_code_against() -> None:
    parameters = inspect.signature(composition.run_composition).parameters
    assert list(parameters) == ["graph", "inputs", "call", "sharding", "local_cores"]
    assert parameters["sharding"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["local_cores"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.iscoroutinefunction(composition.run_composition)
    assert list(inspect.signature(composition.build_compositions).parameters) == [
        "source", "lookup"]
    assert list(inspect.signature(composition.parse_module).parameters) == ["source"]
    fields = [f for f in composition.Signature.__dataclass_fields__]
    assert fields == ["name", "input_sets", "output_sets", "min_set_bytes"]
    graph_fields = set(composition.CompositionGraph.__dataclass_fields__)
    assert {"name", "input_sets", "output_sets", "statements", "dependencies"} <= graph_fields

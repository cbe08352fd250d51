"""Dandelion's composition language: parser, validation, sharding and the dataflow executor.

The public surface (everything else in this package is private)::

    parse_module(source) -> Module                  # text → syntax tree (CompositionSyntaxError)
    build_compositions(source, lookup) -> [CompositionGraph]   # + validation (CompositionInvalid)
    plan_shards(params, join_plan, any_sharding, local_cores) -> [[DataSet | None]]
    parse_any_sharding_mode("max" | "fixed:N" | "auto:C") -> AnySharding
    await run_composition(graph, inputs, call, sharding=..., local_cores=...) -> [DataSet | None]

See ``docs/compositions.md`` for the language and where pappus differs from Dandelion.
"""

from pappus.composition.ast import Application as Application
from pappus.composition.ast import CompositionDef as CompositionDef
from pappus.composition.ast import FunctionDecl as FunctionDecl
from pappus.composition.ast import InputDescriptor as InputDescriptor
from pappus.composition.ast import JoinClause as JoinClause
from pappus.composition.ast import JoinKind as JoinKind
from pappus.composition.ast import Module as Module
from pappus.composition.ast import Name as Name
from pappus.composition.ast import OutputDescriptor as OutputDescriptor
from pappus.composition.ast import Position as Position
from pappus.composition.ast import Sharding as Sharding
from pappus.composition.builder import Lookup as Lookup
from pappus.composition.builder import build_compositions as build_compositions
from pappus.composition.graph import Binding as Binding
from pappus.composition.graph import CompositionGraph as CompositionGraph
from pappus.composition.graph import JoinPlan as JoinPlan
from pappus.composition.graph import Signature as Signature
from pappus.composition.graph import Statement as Statement
from pappus.composition.parser import parse_module as parse_module
from pappus.composition.runtime import CallFunction as CallFunction
from pappus.composition.runtime import run_composition as run_composition
from pappus.composition.sharding import AnySharding as AnySharding
from pappus.composition.sharding import AnyShardingMode as AnyShardingMode
from pappus.composition.sharding import BoundSet as BoundSet
from pappus.composition.sharding import parse_any_sharding_mode as parse_any_sharding_mode
from pappus.composition.sharding import plan_shards as plan_shards

__all__ = [
    "AnySharding",
    "AnyShardingMode",
    "Application",
    "Binding",
    "BoundSet",
    "CallFunction",
    "CompositionDef",
    "CompositionGraph",
    "FunctionDecl",
    "InputDescriptor",
    "JoinClause",
    "JoinKind",
    "JoinPlan",
    "Lookup",
    "Module",
    "Name",
    "OutputDescriptor",
    "Position",
    "Sharding",
    "Signature",
    "Statement",
    "build_compositions",
    "parse_any_sharding_mode",
    "parse_module",
    "plan_shards",
    "run_composition",
]

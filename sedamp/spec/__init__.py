"""The topology: its model, loading and checks, its JSON Schema and its diagram. No processes.

model              the frozen spec objects (Topology, StageSpec, ...) and their choices
keys               the keys a topology file may hold, per section
load               YAML or plain values -> a checked Topology (load/parse/build_topology)
variables          ${VAR} expansion
overrides          --set PATH=VALUE on the parsed tree
problems           the problems recorder the checks share, and the words of the messages
checks_stage       the checks of one stage
checks_graph       the checks of the stage graph
checks_controller  the checks of the controller: section
yamlmap            YAML text -> plain values plus the line of every field
schema             the JSON Schema of the format, for editors
diagram            the stage graph as Mermaid or DOT
"""

from __future__ import annotations

from sedamp.spec.diagram import to_dot, to_mermaid
from sedamp.spec.load import build_topology, load_topology, parse_topology
from sedamp.spec.model import (
    DEFAULT_CAPACITY_EVENTS,
    ControllerSpec,
    Edge,
    OnErrorSpec,
    QueueSpec,
    StageKind,
    StageSpec,
    Topology,
    WorkersSpec,
)
from sedamp.spec.variables import expand_vars

__all__ = [
    "DEFAULT_CAPACITY_EVENTS",
    "ControllerSpec",
    "Edge",
    "OnErrorSpec",
    "QueueSpec",
    "StageKind",
    "StageSpec",
    "Topology",
    "WorkersSpec",
    "build_topology",
    "expand_vars",
    "load_topology",
    "parse_topology",
    "to_dot",
    "to_mermaid",
]

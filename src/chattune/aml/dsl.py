"""``azure.ai.ml.dsl.pipeline``: a decorated function that calls a pipeline component becomes a pipeline job.

The function runs once when called; each component call records its parameters, and the returned outputs map
(``{"trained_model": node.outputs.mlflow_model_folder}``) names what the job exposes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class OutputRef:
    """A named output of a component call, as ``node.outputs.NAME`` gives it."""

    node: ComponentNode
    name: str


class _Outputs:
    def __init__(self, node: ComponentNode):
        self._node = node

    def __getattr__(self, name: str) -> OutputRef:
        if name.startswith("_"):
            raise AttributeError(name)
        return OutputRef(self._node, name)


@dataclass
class ComponentNode:
    """One call of a pipeline component, with the parameters it was given."""

    component: str
    parameters: dict[str, Any]

    @property
    def outputs(self) -> _Outputs:
        """The call's outputs: any attribute names an output (``node.outputs.mlflow_model_folder``)."""
        return _Outputs(self)


@dataclass
class PipelineSettings:
    """A pipeline job's settings, as Azure's ``pipeline_job.settings``."""

    force_rerun: bool = False
    continue_on_step_failure: bool = False
    default_compute: str | None = None


@dataclass
class PipelineJob:
    """What a ``@pipeline`` function returns: submit it with ``ml_client.jobs.create_or_update``."""

    display_name: str
    nodes: list[ComponentNode]
    outputs: dict[str, OutputRef]
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    experiment_name: str | None = None


_recording: list[list[ComponentNode]] = []


class PipelineComponent:
    """A callable pipeline component (``components.get(name="chat_completion_pipeline")``)."""

    def __init__(self, name: str, version: str = "1"):
        self.name = name
        self.version = version

    def __call__(self, **parameters: Any) -> ComponentNode:
        """Record a call of the component with ``parameters`` (inside a ``@pipeline`` function) and return it."""
        node = ComponentNode(self.name, parameters)
        if _recording:
            _recording[-1].append(node)
        return node


def pipeline(
    func: Callable[..., Any] | None = None, *, name: str | None = None, display_name: str | None = None, **_: Any
) -> Any:
    """``@pipeline(name=...)`` as in azure.ai.ml.dsl."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., PipelineJob]:
        @functools.wraps(fn)
        def build(*args: Any, **kwargs: Any) -> PipelineJob:
            _recording.append([])
            try:
                returned = fn(*args, **kwargs) or {}
            finally:
                nodes = _recording.pop()
            return PipelineJob(display_name or name or fn.__name__, nodes, dict(returned))

        return build

    return decorate(func) if func is not None else decorate

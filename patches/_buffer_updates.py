"""What the export-path patches share: finding the buffer updates ``ExportedProgram.module()`` writes, letting the
graph read a written value instead of its ``copy_``, writing values back into buffers at the top level of a compiled
module, wrapping what ``dynamo.compile`` calls, and the step counter their reproducers compile. A helper module, not a
patch.

``ExportedProgram.module()`` turns each BUFFER_MUTATION of an exported program into a ``get_attr`` of the buffer and an
``aten.copy_(buffer, new_value)`` just before the output; a model that returns the buffer it updated returns that
``copy_``'s result (the buffer, updated).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

import torch
from torch.fx import GraphModule, Node

from trt_compat.patching import PatchContext, TargetChanged

aten = torch.ops.aten

_COPY = (aten.copy_.default,)


class BufferUpdateError(ValueError):
    """A graph updates a buffer in a way trt_compat cannot keep through the export path; raised at compile time."""


class BufferWrite(NamedTuple):
    """One buffer update of an exported graph: ``copy_(get_attr buffer, value)``."""

    copy: Node
    buffer: Node  # the get_attr node the copy_ writes into
    value: Node  # the buffer's new value


def resolve(gm: torch.nn.Module, target: str) -> object:
    value: object = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def buffer_writes(gm: GraphModule) -> List[BufferWrite]:
    """The ``copy_`` of each buffer the graph updates, in graph order; [] when none."""
    writes = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _COPY or len(node.args) < 2:
            continue
        buffer, value = node.args[0], node.args[1]
        if isinstance(buffer, Node) and buffer.op == "get_attr" and isinstance(value, Node):
            if isinstance(resolve(gm, buffer.target), torch.Tensor):
                writes.append(BufferWrite(node, buffer, value))
    return writes


def _describe(node: Node) -> str:
    return f"node '{node.name}' ({node.target})"


def _same_layout(value: Node, buffer: Node) -> bool:
    new, old = value.meta.get("val"), buffer.meta.get("val")
    if not (isinstance(new, torch.Tensor) and isinstance(old, torch.Tensor)):
        return False
    return new.dtype == old.dtype and tuple(new.shape) == tuple(old.shape)


def read_written_values(writes: Sequence[BufferWrite], remedy: str) -> List[Node]:
    """Make every reader of a ``copy_``'s result (an output returning the updated buffer) read the written value,
    which is what the buffer holds once the ``copy_`` has run; the copies that had readers.

    The value must have the buffer's shape and dtype (``copy_`` would broadcast or cast it): else
    :class:`BufferUpdateError`, naming the node and ``remedy``.
    """
    redirected = []
    for write in writes:
        if not write.copy.users:
            continue
        if not _same_layout(write.value, write.buffer):
            raise BufferUpdateError(
                f"{_describe(write.copy)} writes a value of another shape or dtype into buffer "
                f"'{write.buffer.target}', and the graph reads the buffer it updated (e.g. returns it). Remedy: "
                + remedy
            )
        write.copy.replace_all_uses_with(write.value)
        redirected.append(write.copy)
    return redirected


def check_one_write_per_buffer(writes: Sequence[BufferWrite], remedy: str) -> None:
    seen: Dict[str, Node] = {}
    for write in writes:
        first = seen.setdefault(write.buffer.target, write.copy)
        if first is not write.copy:
            raise BufferUpdateError(
                f"{_describe(first)} and {_describe(write.copy)} both write buffer '{write.buffer.target}'; an "
                "exported program writes each buffer once. Remedy: " + remedy
            )


def write_back(gm: GraphModule, pairs: Sequence[Tuple[Node, Node]]) -> List[Node]:
    """Insert ``aten.copy_(target, value)`` for each (target, value) just before the output: after every engine and
    PyTorch block of the call has read the old values. The copies, in order."""
    output = next(node for node in gm.graph.nodes if node.op == "output")
    copies = []
    for target, value in pairs:
        with gm.graph.inserting_before(output):
            copy = gm.graph.call_function(aten.copy_.default, (target, value))
        if "val" in target.meta:
            copy.meta["val"] = target.meta["val"]
        copies.append(copy)
    return copies


def set_buffer(gm: torch.nn.Module, target: str, tensor: torch.Tensor) -> None:
    """Register ``tensor`` as the buffer ``target`` (a dotted name: intermediate modules are created as needed)."""
    *path, name = target.split(".")
    owner = gm
    for part in path:
        if not hasattr(owner, part):
            owner.add_module(part, torch.nn.Module())
        owner = getattr(owner, part)
    if name in owner._buffers or not hasattr(owner, name):
        owner.register_buffer(name, tensor)
    else:
        setattr(owner, name, tensor)


def calls_global(function: Callable, module: Any, name: str) -> bool:
    """Whether ``function`` (unwrapped) looks ``name`` up among ``module``'s globals: then replacing ``module.name`` is
    what it calls."""
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    return code is not None and name in code.co_names and getattr(function, "__globals__", None) is vars(module)


COMPILER = "torch_tensorrt.dynamo._compiler"


def wrap_called_by_compile(ctx: PatchContext, name: str, wrapper: Callable) -> None:
    """Wrap ``torch_tensorrt.dynamo._compiler.<name>`` with ``ctx``, after checking that ``dynamo.compile`` looks it up
    there (so that the wrapper is what it calls); TargetChanged otherwise."""
    compiler = ctx.import_module(COMPILER)
    ctx.require_attr(compiler, name, callable)
    if not calls_global(ctx.require_attr(compiler, "compile", callable), compiler, name):
        raise TargetChanged(f"{COMPILER}.compile no longer calls the module's {name}")
    ctx.wrap_function(compiler, name, wrapper)

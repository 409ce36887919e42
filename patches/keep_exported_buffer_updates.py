"""Keep the buffer updates of an exported program through ``torch_tensorrt.dynamo.compile`` (2.2.0-2.13.x).

Not reported upstream as such; 2.14.0 changed the approach (``lift_mutated_buffers``, pytorch/TensorRT#4251).
``ExportedProgram.module()`` reads every buffer with a ``get_attr`` node and writes each buffer the model updates with
a trailing ``aten.copy_(buffer, new_value)``. Up to 2.13.x Torch-TensorRT treats every ``get_attr`` tensor as a
constant:

* the post-lowering pass ``constant_fold`` (``_TorchTensorRTConstantFolder``, whose ``is_impure`` answers False for
  every node) evaluates whatever depends on ``get_attr`` tensors alone at compile time -- ``count + 1`` from
  ``self.count.add_(1)`` becomes a frozen parameter, and the ``copy_`` itself is run once at compile time and erased,
  with the buffer (measured by tracing the pass list on 2.4.0, 2.5.0 and 2.12.1: the ``copy_`` and the ``count``
  attribute are gone after ``constant_fold``, and every call computes with ``count == 1``; the compiled module has no
  ``count`` buffer at all). A read of the cache that is folded (``cache[:, :, 2:3]``) becomes a parameter that shares
  the buffer's storage, and ``torch_tensorrt.save(..., retrace=True)`` then fails on 2.4.0 and 2.5.0 ("Encountered
  aliased inputs that are mutated in the graph");
* whatever is not folded and lands in an engine is an engine weight, copied into the engine when it is built
  (2.14's ``lowering/_buffer_lifting.py`` says so of buffers: it "becomes baked into the engine"), so a buffer an
  engine reads never changes for it, whatever writes it afterwards;
* from 2.7.0 the post-lowering pass ``remove_num_users_is_0_nodes`` also erases the ``copy_`` of a buffer whose new
  value does not depend on constants alone (a KV-cache write), because nothing uses its result (2.12.1: the cache
  never changes). The same pass drops the caller's input updates: ``keep_export_input_updates``.

Wrong numbers from the second call on, no error. Reproducer (dryrun shown; engines do the same)::

    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(()))

        def forward(self, x):
            self.count.add_(1)
            return x * self.count

    program = torch.export.export(Counter(), (torch.ones(2),))
    trt = torch_tensorrt.dynamo.compile(program, arg_inputs=[torch.ones(2)], min_block_size=1)
    trt(torch.ones(2)), trt(torch.ones(2))  # (1, 1) and (1, 1); eager gives (1, 1) and (2, 2)

What trt_compat does, as 2.14 does it, and then writes the update back in the compiled module (2.14 leaves that to an
ExecuTorch runtime): before lowering, each buffer the graph updates becomes a graph input (a placeholder, read by
every former ``get_attr`` of it) and its new value an extra graph output, and the ``copy_`` goes -- so no pass can
fold the buffer or erase its write, and engines take it as an input binding. After ``compile_module`` the compiled
module reads the buffer from its own state again (registered under its name), passes it to the engines, and copies the
new value into it after the engines have run, with an ``aten.copy_`` at its top level; its calling convention is the
model's again. ``torch_tensorrt.save`` (retracing the module with ``torch.export``) keeps that ``copy_`` in the saved
program -- as a BUFFER_MUTATION of its signature on torch 2.4-2.5, as the in-place op in torch 2.12's export IR -- so
``torch_tensorrt.load(...).module()`` keeps the update in a serving process that has never imported trt_compat.
Only ``dynamo.compile`` and ``cross_compile_for_windows`` are changed (their ``post_lowering`` is followed by
``compile_module``, which puts the buffers back); ``convert_exported_program_to_serialized_trt_engine`` returns a bare
engine with nowhere to write an update, and is left as upstream has it.

Refused at compile time, with a :class:`BufferUpdateError` naming the node and the remedy: two writes of one buffer,
and a model that reads the buffer it updated (returns it) when the new value has another shape or dtype than the
buffer. Not measurable here: TensorRT engines (no GPU), and 2.2-2.5's default ``save`` exporter (``retrace=False``),
which reads each engine module's engine.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch.fx import GraphModule, Node
from torch.fx.graph import CodeGen
from trt_compat.patches._buffer_updates import (
    COMPILER,
    BufferUpdateError,
    buffer_writes,
    check_one_write_per_buffer,
    read_written_values,
    resolve,
    set_buffer,
    wrap_called_by_compile,
    write_back,
)
from trt_compat.patches.keep_input_mutations import StepCounter

from trt_compat.patching import Defect, NotApplicable, Patch, PatchContext, TargetChanged

logger = logging.getLogger("trt_compat")

_LIFTED = "trt_compat_lifted_buffer"  # placeholder meta: the buffer this graph input stands for
_REMEDY = (
    "write the buffer once, with a value of its own shape and dtype, or set "
    "TRT_COMPAT_DISABLE=keep_exported_buffer_updates to get upstream's behaviour (the update is then lost)."
)

__all__ = ["BufferUpdateError", "lift_updated_buffers", "put_buffers_back"]


@dataclass(frozen=True)
class Lifted:
    """What a graph input made of a buffer stands for, kept in its placeholder's meta through the compile."""

    target: str  # the buffer's name in the module, dotted for a submodule's
    tensor: torch.Tensor  # the buffer itself
    codegen: CodeGen  # the graph's calling convention before the lift, given back afterwards


def lift_updated_buffers(gm: GraphModule) -> Tuple[GraphModule, List[Node]]:
    """``gm``'s graph with each buffer it updates made a graph input and its new value an extra output, and the new
    placeholders in the order of the extra outputs; ``(gm, [])`` untouched when it updates no buffer.

    Every ``get_attr`` of such a buffer reads the placeholder instead, its ``copy_`` is removed, and a reader of the
    ``copy_``'s result reads the new value. The returned module's forward takes (inputs..., buffers...) and returns
    (outputs..., new values...), flat; it is a new module (``ExportedProgram.module()`` checks its inputs against
    the exported ones in a forward pre-hook on torch 2.4), built on the same graph.
    """
    writes = buffer_writes(gm)
    if not writes:
        return gm, []
    check_one_write_per_buffer(writes, _REMEDY)
    read_written_values(writes, _REMEDY)
    graph = gm.graph
    codegen = graph._codegen
    output = next(node for node in graph.nodes if node.op == "output")
    results = output.args[0]
    if not isinstance(results, (tuple, list)):
        raise BufferUpdateError(
            f"the exported graph returns {type(results).__name__}, not a tuple of outputs, so the updated buffers "
            "cannot be added to its outputs. Remedy: " + _REMEDY
        )
    last_input = [node for node in graph.nodes if node.op == "placeholder"][-1:]
    taken = {node.name for node in graph.nodes}
    lifted = []
    for write in writes:
        target = write.buffer.target
        name = "trt_compat_" + target.replace(".", "_")
        while name in taken:
            name += "_"
        taken.add(name)
        with graph.inserting_after(last_input[0]) if last_input else graph.inserting_before(None):
            placeholder = graph.placeholder(name)
        tensor = resolve(gm, target)
        placeholder.meta["val"] = write.buffer.meta.get("val", torch.empty_like(tensor, device="meta"))
        placeholder.meta[_LIFTED] = Lifted(target, tensor, codegen)
        last_input = [placeholder]
        graph.erase_node(write.copy)
        for reader in [n for n in graph.nodes if n.op == "get_attr" and n.target == target]:
            reader.replace_all_uses_with(placeholder)
            graph.erase_node(reader)
        lifted.append((placeholder, write.value))
    output.args = (type(results)([*results, *(value for _, value in lifted)]),)
    graph.set_codegen(CodeGen())
    graph.lint()
    rebuilt = GraphModule(gm, graph)
    rebuilt.meta = dict(getattr(gm, "meta", {}))
    return rebuilt, [placeholder for placeholder, _ in lifted]


def lifted_placeholders(gm: GraphModule) -> List[Node]:
    return [node for node in gm.graph.nodes if node.op == "placeholder" and _LIFTED in node.meta]


def put_buffers_back(compiled: GraphModule) -> GraphModule:
    """The compiled module reading its lifted buffers from its own state and writing their new values back after
    each call (in place); the module's calling convention is the one the graph had before the lift."""
    placeholders = lifted_placeholders(compiled)
    if not placeholders:
        return compiled
    graph = compiled.graph
    output = next(node for node in graph.nodes if node.op == "output")
    results = list(output.args[0])
    user_outputs, new_values = results[: -len(placeholders)], results[-len(placeholders) :]
    first = next(node for node in graph.nodes if node.op != "placeholder")
    pairs = []
    for placeholder, value in zip(placeholders, new_values):
        lifted: Lifted = placeholder.meta[_LIFTED]
        set_buffer(compiled, lifted.target, lifted.tensor)
        with graph.inserting_before(first):
            buffer = graph.get_attr(lifted.target)
        buffer.meta["val"] = placeholder.meta.get("val")
        placeholder.replace_all_uses_with(buffer)
        graph.erase_node(placeholder)
        pairs.append((buffer, value))
    output.args = (type(output.args[0])(user_outputs),)
    write_back(compiled, pairs)
    graph.set_codegen(placeholders[0].meta[_LIFTED].codegen)
    graph.lint()
    compiled.recompile()
    return compiled


# ---------------------------------------------------------------------------------------------------------------
# Where it hooks in


def _caller_goes_on_to_compile_module() -> bool:
    """Whether the function calling post_lowering (the first frame outside trt_compat) then calls compile_module."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("trt_compat"):
        frame = frame.f_back
    return frame is not None and "compile_module" in frame.f_code.co_names


def _lift_before_lowering(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    if not args or not isinstance(args[0], GraphModule) or not _caller_goes_on_to_compile_module():
        return wrapped(*args, **kwargs)
    gm, placeholders = lift_updated_buffers(args[0])
    if placeholders:
        logger.info(
            "trt_compat: buffers %s are updated by the exported program; they are engine inputs and written back "
            "after each call",
            [node.meta[_LIFTED].target for node in placeholders],
        )
    args = [gm, *args[1:]]
    # 2.2-2.4 hand the lowering passes the sample inputs, one per graph input.
    if placeholders and len(args) > 1 and isinstance(args[1], (list, tuple)):
        args[1] = [*args[1], *(node.meta[_LIFTED].tensor.clone() for node in placeholders)]
    return wrapped(*args, **kwargs)


def _put_back_after_compile(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    gm = args[0] if args else kwargs.get("gm")
    placeholders = lifted_placeholders(gm) if isinstance(gm, GraphModule) else []
    if not placeholders:
        return wrapped(*args, **kwargs)
    from torch_tensorrt import Input

    buffers = [Input.from_tensor(node.meta[_LIFTED].tensor.clone()) for node in placeholders]
    args = list(args)
    if len(args) > 1:
        args[1] = [*args[1], *buffers]
    else:
        key = next(name for name in kwargs if name.startswith("sample") or name == "inputs")
        kwargs = {**kwargs, key: [*kwargs[key], *buffers]}
    return put_buffers_back(wrapped(*args, **kwargs))


# ---------------------------------------------------------------------------------------------------------------
# Reproducer (run by `python -m trt_compat verify` and the compatibility matrix)


def check_exported_counter(probe: Any) -> Optional[str]:
    """Three calls of the compiled counter, compared with eager: outputs and the counter."""
    if hasattr(importlib.import_module(COMPILER), "lift_mutated_buffers"):
        raise NotApplicable("from 2.14.0 dynamo.compile lifts updated buffers itself (see apply_buffer_copy_back)")
    x = torch.arange(6.0).view(2, 3)
    eager = StepCounter().eval()
    compiled = probe.compile_exported(StepCounter().eval(), x)
    with torch.no_grad():
        outputs = [compiled.output] + [compiled(x) for _ in range(2)]
        for call, output in enumerate(outputs):
            problem = probe.same(output, eager(x))
            if problem is not None:
                return f"call {call + 1}: {problem}"
    count = dict(compiled.module.named_buffers()).get("count")
    if count is None:
        return "the compiled module has no 'count' buffer any more"
    problem = probe.same(count, eager.count)
    return None if problem is None else f"the counter after three calls: {problem}"


PATCH = Patch(
    name="keep_exported_buffer_updates",
    title="buffers an exported program updates are engine inputs, written back after each call",
    issue=None,
    first_affected="2.3.0",
    fixed_in="2.14.0",
    why=(
        "Up to 2.13.x dynamo.compile treats every buffer of the exported program as a constant: constant_fold "
        "freezes what an updated buffer computes (a step counter's count + 1) and erases its copy_, an engine bakes "
        "any buffer it reads as a weight, and from 2.7.0 remove_num_users_is_0_nodes erases the remaining buffer "
        "writes (KV-cache writes). A step counter never changes on any of them, and from 2.7.0 neither does a KV "
        "cache (on 2.3.0-2.6.x its writes survive in memory); wrong numbers from the second call, no error "
        "(measured on every release from 2.3.0 to 2.13.0). 2.14.0 lifts updated buffers to engine inputs itself. "
        "2.2.0 is not covered: its dynamo.compile has no post_lowering step to put the buffers before, and no dryrun "
        "to prove a fix with here."
    ),
    defects=(
        Defect(
            key="exported_counter_frozen",
            title="a buffer counter of an exported program is frozen at its first value",
            check=check_exported_counter,
        ),
    ),
)


def apply(ctx: PatchContext) -> None:
    compiler = ctx.import_module(COMPILER)
    compile_module = ctx.require_attr(compiler, "compile_module", callable)
    parameters = list(inspect.signature(inspect.unwrap(compile_module)).parameters)
    if parameters[:1] != ["gm"] or len(parameters) < 2 or not parameters[1].startswith("sample"):
        raise TargetChanged(f"{COMPILER}.compile_module no longer takes (gm, sample inputs, ...)")
    wrap_called_by_compile(ctx, "post_lowering", _lift_before_lowering)
    wrap_called_by_compile(ctx, "compile_module", _put_back_after_compile)

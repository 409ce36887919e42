"""Keep the in-place writes of an exported graph through the post-lowering pass ``remove_num_users_is_0_nodes``.

Not reported upstream yet. From 2.7.0 (pytorch/TensorRT#3388 added the pass) the post-lowering passes of
``torch_tensorrt.dynamo.compile`` end with ``remove_num_users_is_0_nodes``, which erases every node whose result
nothing uses -- including the ``aten.copy_(x, new_value)`` through which ``ExportedProgram.module()`` writes the
caller's updated input back (a USER_INPUT_MUTATION), whose result is never used: its effect is the point. Measured by
tracing the pass list on 2.12.1 and 2.14.0: the ``copy_`` into the input is there before the pass and gone after it,
and with the pass left out (in a test process) the update is kept. On 2.7-2.13 the same pass erases the remaining
buffer writes too (KV caches; ``keep_exported_buffer_updates`` takes those out of its reach); 2.14 lifts buffers to
engine inputs before lowering, so there it is the inputs. 2.5.0 and 2.6.x (no such pass) keep the caller's update,
in memory and after ``torch_tensorrt.save``/``load``. Reproducer::

    class AddToInput(torch.nn.Module):
        def forward(self, x):
            x.add_(1)
            return x * 2

    x = torch.zeros(2)
    program = torch.export.export(AddToInput(), (x.clone(),))
    trt = torch_tensorrt.dynamo.compile(program, arg_inputs=[x.clone()], min_block_size=1)
    trt(x)  # returns [2, 2] as eager does, but x stays [0, 0]; eager leaves [1, 1]

The program saved by ``torch_tensorrt.save`` has lost it as well (its signature has no USER_INPUT_MUTATION), so the
serving process never updates the input either. Nothing warns.

trt_compat replaces the pass by one that erases what nothing uses, as upstream's does, except nodes that write into
one of their arguments (in-place and ``out=`` ops, as their schemas declare). The ``copy_`` has no TensorRT converter,
so it stays in a PyTorch block that runs after the engine computing the new value; the program ``torch_tensorrt.save``
writes keeps it (the in-place op in torch 2.12's and 2.14's export IR), so the serving process updates the caller's
tensor too, without trt_compat.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch.fx import GraphModule, Node

from trt_compat.patching import Defect, Patch, PatchContext, TargetChanged, lowering_pass, post_lowering_passes

_PASS = "remove_num_users_is_0_nodes"


def writes_an_argument(node: Node) -> bool:
    """Whether ``node``'s op writes into one of its arguments, as its schema declares (``Tensor(a!)``)."""
    schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
    return schema is not None and any(
        argument.alias_info is not None and argument.alias_info.is_write for argument in schema.arguments
    )


def remove_unused_nodes_keeping_writes(gm: GraphModule) -> GraphModule:
    """Erase the nodes whose result nothing uses and that read another node, latest first, except the output and
    the nodes that write into an argument."""
    for node in reversed(list(gm.graph.nodes)):
        if node.op == "output" or node.users or not node.all_input_nodes or writes_an_argument(node):
            continue
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


# ---------------------------------------------------------------------------------------------------------------
# Reproducer (run by `python -m trt_compat verify` and the compatibility matrix)


class AddToInput(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return x * 2


def check_exported_input_update(probe: Any) -> Optional[str]:
    x = torch.arange(6.0).view(2, 3)
    expected = x + 1
    compiled = probe.compile_exported(AddToInput().eval(), x)
    problem = probe.same(compiled.output, expected * 2)
    if problem is not None:
        return f"the output: {problem}"
    problem = probe.same(x, expected)
    return None if problem is None else f"x.add_(1) on the caller's input is not kept: {problem}"


PATCH = Patch(
    name="keep_export_input_updates",
    title="in-place writes of an exported graph survive remove_num_users_is_0_nodes",
    issue=None,
    first_affected="2.7.0",
    fixed_in=None,
    why=(
        "From 2.7.0 the post-lowering pass remove_num_users_is_0_nodes erases every node whose result is unused, "
        "including the copy_ that writes the caller's updated input back (and on 2.7-2.13 the buffer writes): "
        "on the export path x.add_(1) never reaches the caller, in memory or after torch_tensorrt.save/load "
        "(measured on 2.12.1 and 2.14.0). No error."
    ),
    defects=(
        Defect(
            key="exported_input_update_lost",
            title="an in-place update of the caller's input is lost on the export path",
            check=check_exported_input_update,
        ),
    ),
)


def apply(ctx: PatchContext) -> None:
    manager = post_lowering_passes(ctx)
    original = ctx.find_pass(manager, _PASS)
    if original is None:
        raise TargetChanged(f"the post-lowering pass list has no {_PASS}")
    ctx.replace_pass(manager, original, lowering_pass(remove_unused_nodes_keeping_writes))

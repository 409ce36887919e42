"""Let an exported model return a buffer it updates through 2.14's ``lift_mutated_buffers``.

Upstream issue pytorch/TensorRT#4694 (open). From 2.14.0 ``torch_tensorrt.dynamo.compile`` calls
``lowering._buffer_lifting.lift_mutated_buffers`` before lowering: it turns each updated buffer into an engine input
and erases the trailing ``aten.copy_(buffer, new_value)`` that ``ExportedProgram.module()`` writes it with. When the
model returns the buffer it updated, the graph's output *is* that ``copy_``'s result, and ``Graph.erase_node``
refuses to erase a node that still has a user::

    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(()))

        def forward(self, x):
            self.count.add_(1)
            return x * self.count, self.count

    program = torch.export.export(Counter(), (torch.ones(2),))
    torch_tensorrt.dynamo.compile(program, arg_inputs=[torch.ones(2)], min_block_size=1)
    # RuntimeError: Tried to erase Node copy__default but it still had 1 users in the graph: {output: None}!

Measured on 2.14.0 (the function does not exist before). The model cannot be compiled at all.

trt_compat lets every reader of such a ``copy_`` read the value it writes -- what the buffer holds once the ``copy_``
has run -- before ``lift_mutated_buffers`` runs, which then erases the ``copy_`` as it does for any other update. The
model returns the buffer's new value (a new tensor, as every compiled output is; eager mode returns the buffer object
itself). Refused at compile time, naming the node: a written value of another shape or dtype than the buffer
(``copy_`` would broadcast or cast it). Whether the update itself reaches the buffer is the business of the update's
own path (``apply_buffer_copy_back`` for the in-memory module).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Optional

import torch
from torch.fx import GraphModule
from trt_compat.patches._buffer_updates import (
    COMPILER,
    BufferUpdateError,
    buffer_writes,
    read_written_values,
    wrap_called_by_compile,
)

from trt_compat.patching import Defect, NotApplicable, Patch, PatchContext

__all__ = ["BufferUpdateError", "read_updated_buffer_values"]

_REMEDY = (
    "return a copy of the new value in the buffer's shape and dtype (e.g. self.count.clone() after the update), or set "
    "TRT_COMPAT_DISABLE=return_updated_buffers to get upstream's behaviour (the compile then fails)."
)


def read_updated_buffer_values(gm: GraphModule) -> int:
    """Make the readers of each buffer update's ``copy_`` read the written value instead (in place); how many
    ``copy_`` nodes had readers. Recompiles ``gm`` when something changed."""
    redirected = read_written_values(buffer_writes(gm), _REMEDY)
    if redirected:
        gm.graph.lint()
        gm.recompile()
    return len(redirected)


# ---------------------------------------------------------------------------------------------------------------
# Reproducer (run by `python -m trt_compat verify` and the compatibility matrix)


class ReturnedCounter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> Any:
        self.count.add_(1)
        return x * self.count, self.count


def check_returned_buffer(probe: Any) -> Optional[str]:
    if not hasattr(importlib.import_module(COMPILER), "lift_mutated_buffers"):
        raise NotApplicable("lift_mutated_buffers is new in 2.14.0")
    x = torch.arange(6.0).view(2, 3)
    try:
        compiled = probe.compile_exported(ReturnedCounter().eval(), x)
    except RuntimeError as exc:
        return f"the compile fails: {(str(exc).splitlines() or [''])[0]}"
    return probe.same(compiled.output, (x, torch.ones(())))


PATCH = Patch(
    name="return_updated_buffers",
    title="an exported model may return a buffer it updates",
    issue="https://github.com/pytorch/TensorRT/issues/4694",
    first_affected="2.14.0",
    fixed_in=None,
    why=(
        "2.14.0's lift_mutated_buffers erases the copy_ that writes an updated buffer, and fails when the model "
        "returns that buffer (the output still uses the copy_): 'Tried to erase Node copy__default but it still had "
        "1 users' -- the model cannot be compiled through the export path."
    ),
    defects=(
        Defect(
            key="returned_buffer_fails",
            title="a model returning a buffer it updates cannot be compiled",
            check=check_returned_buffer,
        ),
    ),
)


def _read_values_first(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    gm = args[0] if args else kwargs.get("gm")
    if isinstance(gm, GraphModule):
        read_updated_buffer_values(gm)
    return wrapped(*args, **kwargs)


def apply(ctx: PatchContext) -> None:
    wrap_called_by_compile(ctx, "lift_mutated_buffers", _read_values_first)

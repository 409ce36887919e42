"""Make the module 2.14's ``dynamo.compile`` returns apply its own buffer updates (``copy-back``).

Not reported upstream: it is upstream's stated design (``lowering/_buffer_lifting.py``, "What copy-back does *not* do:
update the buffer in process"). From 2.14.0 ``lift_mutated_buffers`` makes each buffer the exported program updates
an engine input. A KV-cache write the converter can lower to an ``IKVCacheUpdateLayer`` (a 4-D ``[batch, heads,
positions, head_dim]`` cache written along dim 2) is written in place by the engine, through aliased input and output
bindings. Every other update -- a step counter, a 2-D cache, a write whose result nothing else reads -- is
"copy-back": its new value becomes a trailing graph output that ``hide_copyback_outputs`` hides from the module's
return, for ``torch_tensorrt.save`` to declare as a BUFFER_MUTATION that the loading runtime applies. Nothing writes
it in the compiled module itself, so the module ``dynamo.compile`` returns computes with the buffer's compile-time
value at every call::

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

while the same program after ``torch_tensorrt.save`` and ``torch_tensorrt.load`` counts (measured on 2.14.0 in dryrun;
the copy-back value is computed by the engine, so an engine changes nothing here). Wrong numbers from the second
call in the process that compiled the model, no error.

trt_compat writes each copy-back value into its buffer at the end of the compiled module's graph, with an
``aten.copy_`` after the engines, before ``hide_copyback_outputs`` hides the values (which stay graph outputs, as
upstream's exporters expect). ``torch_tensorrt.save`` retraces the module with ``torch.export``, which records the
``copy_`` as the buffer's BUFFER_MUTATION; upstream's ``_declare_aliased_kv_mutations_on_ep`` then drops the trailing
values without declaring the buffer a second time (it skips buffers torch.export already declared), so the saved
program updates each buffer once, in a serving process without trt_compat as before. Engine-aliased KV writes are
left to the engine.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Optional, Sequence

import torch
from torch.fx import GraphModule
from trt_compat.patches._buffer_updates import COMPILER, resolve, wrap_called_by_compile, write_back
from trt_compat.patches.keep_input_mutations import StepCounter

from trt_compat.patching import Defect, NotApplicable, Patch, PatchContext

_COPYBACK = "_copyback_mutation_buffers"  # upstream's record, on the compiled module's meta, of its copy-back buffers


def copy_back_in_place(gm: GraphModule, buffers: Sequence[str], hidden: int) -> None:
    """Write the last ``hidden`` outputs of ``gm``'s graph into ``buffers`` (its own buffers, in output order) at the
    end of the graph (in place). Nothing changes when ``hidden`` does not match ``buffers`` or a buffer is missing:
    that is not the shape upstream records, and writing into the wrong buffer is worse than not writing."""
    output = next(node for node in gm.graph.nodes if node.op == "output")
    results = output.args[0]
    if not hidden or hidden != len(buffers) or not isinstance(results, (tuple, list)) or len(results) < hidden:
        return
    if not all(isinstance(_buffer_or_none(gm, name), torch.Tensor) for name in buffers):
        return
    first = next(node for node in gm.graph.nodes if node.op != "placeholder")
    pairs = []
    for name, value in zip(buffers, results[-hidden:]):
        with gm.graph.inserting_before(first):
            pairs.append((gm.graph.get_attr(name), value))
    write_back(gm, pairs)
    gm.graph.lint()
    gm.recompile()


def _buffer_or_none(gm: GraphModule, name: str) -> Any:
    try:
        return resolve(gm, name)
    except AttributeError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Reproducer (run by `python -m trt_compat verify` and the compatibility matrix)


def check_copy_back_in_memory(probe: Any) -> Optional[str]:
    if not hasattr(importlib.import_module(COMPILER), "hide_copyback_outputs"):
        raise NotApplicable("copy-back is new in 2.14.0")
    x = torch.arange(6.0).view(2, 3)
    compiled = probe.compile_exported(StepCounter().eval(), x)
    with torch.no_grad():
        second = compiled(x)
    problem = probe.same(second, x * 2)
    return None if problem is None else f"the second call: {problem}"


PATCH = Patch(
    name="apply_buffer_copy_back",
    title="the module dynamo.compile returns applies its copy-back buffer updates itself",
    issue=None,
    first_affected="2.14.0",
    fixed_in=None,
    why=(
        "From 2.14.0 a buffer update the engine cannot alias (a step counter, a 2-D cache) is 'copy-back': its new "
        "value is a hidden graph output for torch_tensorrt.save to declare, and nothing writes it in the compiled "
        "module, which computes with the compile-time value at every call (the saved and reloaded program counts)."
    ),
    defects=(
        Defect(
            key="copy_back_not_applied",
            title="the compiled module never applies a copy-back buffer update (a step counter stays at 0)",
            check=check_copy_back_in_memory,
        ),
    ),
)


def _copy_back_then_hide(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    gm = args[0] if args else kwargs.get("gm")
    hidden = args[1] if len(args) > 1 else kwargs.get("num_hidden", 0)
    if isinstance(gm, GraphModule) and isinstance(hidden, int):
        copy_back_in_place(gm, list(gm.meta.get(_COPYBACK, ())), hidden)
    return wrapped(*args, **kwargs)


def apply(ctx: PatchContext) -> None:
    wrap_called_by_compile(ctx, "hide_copyback_outputs", _copy_back_then_hide)

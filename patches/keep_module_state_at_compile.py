"""Compiling leaves a module's buffers as they were: no batch counted at compile time.

Not reported upstream yet. The ``torch.compile`` backend traces the Dynamo graph with ``aot_export_joint_simple``
inside the graph's fake mode with ``allow_non_fake_inputs=True``. A module Dynamo keeps as a ``call_module`` node
(torch 2.2-2.4 do so for every built-in ``torch.nn`` module; torch 2.5-2.11 when ``torch._dynamo.config.
inline_inbuilt_nn_modules`` is False) runs its Python ``forward`` during that trace on its *real* parameters and
buffers, and an in-place op whose operands are all real runs for real under such a fake mode: ``BatchNorm``'s
``self.num_batches_tracked.add_(1)`` in training mode counts one batch at every compile. The trace then fails on the
running-mean update (functionalization refuses a real tensor written with a fake one), the backend runs the graph
in PyTorch, and that run counts the call's batch again. Measured with ``options={"dryrun": True}`` on the CPU
(``BatchNorm1d`` in training mode, one call): eager 1, upstream 2 on 2.3.0 and 2.4.0, and with the flag on 2.5.0 to
2.11.0 (not on 2.12.0 and newer, whose Dynamo inlines the module whatever the flag says); after four recompiles 4
against 8. Whatever else reads the counter (momentum-free running averages, ``momentum=None``) is off
too. No error.

Reproducer for an upstream report (2.4.0)::

    import torch, torch_tensorrt

    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3)).cuda().train()
    compiled = torch.compile(model, backend="torch_tensorrt", options={"min_block_size": 1})
    compiled(torch.randn(8, 3, device="cuda"))
    print(model[0].num_batches_tracked.item())   # 2; eager: 1

Here every buffer of a module in training mode that a ``call_module`` node runs is saved before the backend's AOT
trace (``aot_export_joint_simple``, looked up in the backends module at call time) and its contents put back
afterwards, whether the trace succeeded or not, without advancing the buffer's version counter further (the counter
itself cannot be wound back: it says the tensor was written once). A graph without such a node costs one look at its
nodes. The rest of the backend is unchanged: the graph still runs in PyTorch where upstream's trace fails, and that
run updates the buffers as eager does.
"""

import contextlib
import inspect
from typing import Any, Callable, Iterator, List, Optional, Tuple

import torch
from torch.fx import GraphModule

from trt_compat.patching import Defect, NotApplicable, Patch, PatchContext, TargetChanged

_BACKENDS_MODULE = "torch_tensorrt.dynamo.backend.backends"
_TRACER = "aot_export_joint_simple"


def module_state_at_risk(gm: GraphModule) -> List[torch.Tensor]:
    """The buffers of every module in training mode that a ``call_module`` node of ``gm`` runs (each once)."""
    buffers, seen = [], set()
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        for module in gm.get_submodule(node.target).modules():
            if not module.training:
                continue
            for buffer in module.buffers(recurse=False):
                if id(buffer) not in seen:
                    seen.add(id(buffer))
                    buffers.append(buffer)
    return buffers


@contextlib.contextmanager
def contents_kept(buffers: List[torch.Tensor]) -> Iterator[None]:
    """Put back the contents ``buffers`` have on entry when the block exits (however it exits).

    The copies are real tensors even inside the fake mode the backend traces in (where a clone would be fake).
    """
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        saved = [buffer.detach().clone() for buffer in buffers]
    try:
        yield
    finally:
        with unset_fake_temporarily(), torch.no_grad():
            for buffer, contents in zip(buffers, saved):
                # .data: a view with a version counter of its own, so restoring is not one more write to count.
                buffer.data.copy_(contents)


def trace_keeping_module_state(trace: Callable, gm: GraphModule, *args: Any, **kwargs: Any) -> Any:
    """``trace(gm, *args, **kwargs)``, after which the buffers of ``gm``'s training-mode modules are as before."""
    buffers = module_state_at_risk(gm)
    if not buffers:
        return trace(gm, *args, **kwargs)
    with contents_kept(buffers):
        return trace(gm, *args, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# The declared defect: the reproducer the compatibility matrix and `python -m trt_compat verify` run.


class BatchNormTraining(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * 1


def _dynamo_keeps_modules() -> Any:
    """Dynamo's setting that keeps built-in modules as ``call_module`` nodes, where this torch has one."""
    config = torch._dynamo.config
    if not hasattr(config, "inline_inbuilt_nn_modules"):
        return contextlib.nullcontext()  # torch 2.2-2.3: they always are
    return config.patch(inline_inbuilt_nn_modules=False)


def _kept_as_module(model: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether this torch's Dynamo hands the backend ``model``'s BatchNorm as a ``call_module`` node."""
    found = []

    def capture(gm: GraphModule, sample_inputs: Any) -> Callable:
        found.append(any(node.op == "call_module" for node in gm.graph.nodes))
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=capture)(x)
    torch._dynamo.reset()
    return any(found)


def check_batch_counted_at_compile(probe: Any) -> Optional[str]:
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    with _dynamo_keeps_modules():
        if not _kept_as_module(BatchNormTraining().train(), x):
            raise NotApplicable(f"torch {torch.__version__.split('+')[0]}'s Dynamo never keeps BatchNorm as a module")
        model = BatchNormTraining().train()
        try:
            probe.compile(model, x)
            calls = 1
        except Exception:  # noqa: BLE001 -- 2.2-2.4: the trace fails on the running-mean update; what it left counts
            calls = 0
    counted = model.bn.num_batches_tracked.item()
    return None if counted == calls else f"num_batches_tracked is {counted} after {calls} call(s) (eager: {calls})"


def trace_like_the_backend(gm: GraphModule, sample_inputs: List[torch.Tensor]) -> Any:
    """A stand-in for the backend's trace: ``aot_export_joint_simple`` inside a fake mode that accepts real tensors,
    on fake copies of the inputs, as ``_pretraced_backend`` traces the Dynamo graph."""
    from torch._functorch.aot_autograd import aot_export_joint_simple
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fakes = [mode.from_tensor(t) for t in sample_inputs]
    with mode:
        return aot_export_joint_simple(gm, fakes, trace_joint=False)


def _compile_and_call(model: torch.nn.Module, x: torch.Tensor, trace: Callable) -> torch.Tensor:
    """What the backend does with a training-mode BatchNorm kept as a ``call_module`` node: its trace fails on the
    running-mean update, so the graph runs in PyTorch (which counts the call's batch, as eager does)."""
    gm = torch.fx.symbolic_trace(model)  # the call_module node Dynamo hands over on torch 2.2-2.4
    try:
        trace(gm, [x])
    except RuntimeError:  # "mutating a non-functional tensor with a functional tensor is not allowed"
        pass
    return gm(x)


def demonstrate(say: Callable[[str], None]) -> list:
    """``trt-compat demo``: one compile and call of a training-mode BatchNorm, its trace as upstream runs it (a
    stand-in) and inside trt_compat's wrapper, against one eager call."""
    from trt_compat.demo import WITH, WITHOUT, Check, as_installed, identical

    say(
        "upstream: the torch.compile backend traces in a fake mode that accepts real tensors; a module kept as a "
        "call_module node (torch 2.2-2.4; 2.5-2.11 with inline_inbuilt_nn_modules=False) runs on its real buffers "
        "during that trace, so a training-mode BatchNorm counts one extra batch at every compile (wrong state, no "
        "error)."
    )
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    eager = BatchNormTraining().train()
    expected = eager(x)
    eager_count = eager.bn.num_batches_tracked.item()
    counts, states = {}, {}
    keeping_state = as_installed(_keeping_module_state, trace_like_the_backend)
    for name, trace in (("without", trace_like_the_backend), ("with", keeping_state)):
        model = BatchNormTraining().train()
        output = _compile_and_call(model, x, trace)
        counts[name] = model.bn.num_batches_tracked.item()
        states[name] = identical(output, expected) and all(
            identical(buffer, dict(eager.named_buffers())[key]) for key, buffer in model.named_buffers()
        )
    say(f"BatchNorm1d in training mode, compiled and called once: num_batches_tracked eager {eager_count}")
    say(
        f"without trt_compat (a stand-in: aot_export_joint_simple in that fake mode, then the graph run in PyTorch "
        f"where the trace fails, as upstream does): {counts['without']}"
    )
    say(f"with trt_compat: {counts['with']}; output and every buffer bit-identical to eager: {states['with']}")
    return [
        Check(PATCH.name, WITHOUT, "the stand-in's trace counts a batch", counts["without"] != eager_count),
        Check(PATCH.name, WITH, "output and buffers bit-identical to eager", states["with"]),
    ]


PATCH = Patch(
    name="keep_module_state_at_compile",
    title="compiling leaves a module's buffers as they were (no batch counted at compile time)",
    issue=None,
    first_affected="2.2.0",
    fixed_in=None,
    why=(
        "The torch.compile backend traces with aot_export_joint_simple in a fake mode that accepts real tensors; a "
        "module Dynamo keeps as a call_module node (torch 2.2-2.4 always, torch 2.5-2.11 with "
        "inline_inbuilt_nn_modules=False) runs on its real buffers during that trace, so a training-mode "
        "BatchNorm counts one extra batch (num_batches_tracked) at every compile. Wrong state, no error."
    ),
    defects=(
        Defect(
            key="batch_counted_at_compile",
            title="a training-mode BatchNorm counts a batch each time it is compiled",
            check=check_batch_counted_at_compile,
        ),
    ),
)


def _keeping_module_state(wrapped: Callable, instance: Any, args: Tuple[Any, ...], kwargs: dict) -> Any:
    kwargs = dict(kwargs)
    gm = args[0] if args else kwargs.pop("func")
    return trace_keeping_module_state(wrapped, gm, *args[1:], **kwargs)


def apply(ctx: PatchContext) -> None:
    backends = ctx.import_module(_BACKENDS_MODULE)
    pretraced = inspect.unwrap(ctx.require_attr(backends, "_pretraced_backend", callable))
    ctx.require_attr(backends, _TRACER, callable)
    # Replacing the module global only helps if the backend looks the tracer up at call time.
    if _TRACER not in getattr(getattr(pretraced, "__code__", None), "co_names", ()):
        raise TargetChanged(f"{_BACKENDS_MODULE}._pretraced_backend no longer traces with {_TRACER}")
    ctx.wrap_function(backends, _TRACER, _keeping_module_state)

"""Compute ``.item()`` of a graph input at every call instead of folding in the value of the first call.

Not reported upstream yet; found by the differential campaign (compat/DIFFERENTIAL.md, probe ``input_item``) and
named by the value audit. Torch-TensorRT 2.12.0 added ``fold_get_attr_item_calls`` to its ``torch.compile``
backend: before AOT tracing, ``backends._pretraced_backend`` replaces every ``<placeholder>.item()`` and
``<get_attr>.item()`` of the Dynamo graph by the Python number it has at compile time (read through Dynamo's
reference to the real tensor), to spare AOT tracing a data-dependent scalar. That is right for parameters and
buffers, which the compiled graph treats as constants anyway. But a placeholder is also how every *graph input*
reaches the backend, and Dynamo does not guard on a tensor's value: the compiled graph then keeps the first call's
number for every later call. With ``torch._dynamo.config.capture_scalar_outputs = True`` (without it an ``.item()``
breaks the graph and never reaches the backend), on 2.12.0-2.14.0 (measured on 2.12.1, 2.13.0 and 2.14.0 with
``options={"dryrun": True}``; the pass is absent from 2.11.0 and older)::

    import torch, torch_tensorrt

    class ScaleByInput(torch.nn.Module):
        def forward(self, x, s):
            return x * s.item()

    torch._dynamo.config.capture_scalar_outputs = True
    model, x = ScaleByInput(), torch.ones(2, 3, device="cuda")
    compiled = torch.compile(model, backend="torch_tensorrt", options={"min_block_size": 1})
    compiled(x, torch.tensor(2.0, device="cuda"))          # 2.0 everywhere, as eager
    print(compiled(x, torch.tensor(5.0, device="cuda")))   # still 2.0: the first call's s was folded in

Nothing warns; the numbers are wrong from the second call on. (An ``.item()`` reached through ``clone()`` /
``detach()`` chains is the keep_identity_ops patch's business; this one is about the graph input itself.)

Here the folding keeps upstream's code and sees only what is constant: ``_get_actual_tensor``, which the pass asks
for each candidate's real tensor, answers "unknown" (None, as upstream itself does for a tensor it cannot read)
for a placeholder that is not a module's parameter, buffer or tensor attribute. The ``.item()`` then stays in the
graph and AOT tracing keeps it as a data-dependent scalar, which these releases compile and run: every call uses
its own input (measured: 5.0 on the second call above, on 2.12.1-2.14.0). Parameters, buffers and ``get_attr``
tensors are folded as before.

The function below works on plain ``torch.fx`` nodes; ``apply`` wraps the module global ``_get_actual_tensor`` that
``fold_get_attr_item_calls`` calls.
"""

from typing import Any, Callable, Optional

import torch
from torch.fx import Node

from trt_compat.patching import Defect, NotApplicable, Patch, PatchContext, TargetChanged
from trt_compat.probing import has_module

_FOLD_MODULE = "torch_tensorrt.dynamo.lowering.passes.fold_get_attr_item_calls"
_BACKENDS_MODULE = "torch_tensorrt.dynamo.backend.backends"


def is_module_state(node: Node) -> bool:
    """Whether the graph reads ``node``'s tensor from an ``nn.Module`` (a parameter, buffer or tensor attribute, or a
    ``get_attr``), whose value a compiled graph may treat as constant; False for a graph input of the call.

    Dynamo records where each placeholder comes from (``meta["grapharg"].source``); its guard source says whether
    that is module state. Without that record (a graph Dynamo did not make) a placeholder is an input.
    """
    if node.op == "get_attr":
        return True
    if node.op != "placeholder":
        return False
    source = getattr(node.meta.get("grapharg"), "source", None)
    guard_source = getattr(source, "guard_source", None)
    if callable(guard_source):  # a method on older torch, a property on newer
        guard_source = guard_source()
    return any(
        callable(getattr(guard_source, test, None)) and getattr(guard_source, test)()
        for test in ("is_specialized_nn_module", "is_unspecialized_nn_module")
    )


def _module_state_only(wrapped: Callable, _instance: Any, args: tuple, kwargs: dict) -> Any:
    origin = args[0] if args else kwargs.get("origin")
    if isinstance(origin, Node) and not is_module_state(origin):
        return None  # not a constant: the pass leaves this .item() in the graph
    return wrapped(*args, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Defect reproducer (run by `python -m trt_compat verify` and the compatibility matrix)


class ScaleByInput(torch.nn.Module):
    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x * s.item()


def check_input_item_folded(probe: Any) -> Optional[str]:
    """None when a second call with another ``s`` uses that ``s``; else what the compiled model returned."""
    if not has_module(_FOLD_MODULE):
        raise NotApplicable("this release has no fold_get_attr_item_calls (added in 2.12.0)")
    model, x = ScaleByInput().eval(), torch.ones(2, 3)
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        compiled = probe.compile(model, x, torch.tensor(2.0))
        later = compiled(x, torch.tensor(5.0))
    difference = probe.same(later, model(x, torch.tensor(5.0)))
    if difference is None:
        return None
    return f"x * s.item(): the second call (s=5) {difference}: the first call's s was folded in"


PATCH = Patch(
    name="keep_input_items",
    title=".item() of a graph input is computed at every call, not folded into the first call's value",
    issue=None,
    first_affected="2.12.0",
    fixed_in=None,
    why=(
        "From 2.12.0 the torch.compile backend's fold_get_attr_item_calls replaces .item() of every graph "
        "placeholder by its value at compile time, graph inputs included: with capture_scalar_outputs, every later "
        "call computes with the first call's number (wrong numbers, no error). Unchanged up to the newest release."
    ),
    defects=(
        Defect(
            key="input_item_folded",
            title="x * s.item() of a graph input s keeps the first call's s (wrong numbers)",
            check=check_input_item_folded,
        ),
    ),
)


def apply(ctx: PatchContext) -> None:
    import inspect

    fold = ctx.import_module(_FOLD_MODULE)
    ctx.require_attr(fold, "_get_actual_tensor", callable)
    folder = inspect.unwrap(ctx.require_attr(fold, "fold_get_attr_item_calls", callable))
    # Replacing the module global changes what the folding reads only if it looks the name up there at each call.
    names = getattr(getattr(folder, "__code__", None), "co_names", ())
    if "_get_actual_tensor" not in names or getattr(folder, "__globals__", None) is not vars(fold):
        raise TargetChanged(f"{_FOLD_MODULE}.fold_get_attr_item_calls no longer calls the module's _get_actual_tensor")
    backends = ctx.import_module(_BACKENDS_MODULE)
    if inspect.unwrap(getattr(backends, "fold_get_attr_item_calls", None)) is not folder:
        raise TargetChanged(f"{_BACKENDS_MODULE} no longer calls {_FOLD_MODULE}.fold_get_attr_item_calls")
    ctx.wrap_function(fold, "_get_actual_tensor", _module_state_only)

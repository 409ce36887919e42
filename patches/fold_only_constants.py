"""Fold ``.item()`` into a number only where the tensor is a constant of the graph, never a graph input.

Not reported upstream yet. Torch-TensorRT 2.12.0 added ``fold_get_attr_item_calls`` to its ``torch.compile``
backend: before AOT tracing, ``backends._pretraced_backend`` replaces ``t.item()`` by the number ``t`` holds at
compile time when ``t`` is a ``get_attr`` or *any* placeholder of the Dynamo graph (its helper
``_get_actual_tensor`` reads the real tensor Dynamo recorded, ``meta["grapharg"].example``, or the sample input).
The pass was written for scalar parameters ("genuinely constant at inference time"), but every placeholder of a
Dynamo graph is an input: the compiled graph is called again with other values, and Dynamo does not guard on
them. On 2.12.0, 2.12.1, 2.13.0 and 2.14.0 (the pass is absent from 2.11.0 and older) the compiled model then
silently keeps computing with the first value:

* with Dynamo's default configuration, ``x * x.sum().item()`` breaks the graph at ``.item()``; once the number
  changes, Dynamo passes it to the rest of the function as a tensor input whose ``.item()`` upstream folds: for
  x = 1, 2, 3 (three elements) the compiled model gives 3, 12, **18** (eager: 27), and from then on 6 * x;
* with ``capture_scalar_outputs=True``, ``x * s.item()`` for an input ``s`` keeps the first call's ``s``;
* parameters are graph inputs too: Dynamo compiles a module class's ``forward`` once for all its instances
  (``Module.compile()`` on each block of a model, or one compiled function given several blocks), so with
  ``capture_scalar_outputs=True`` every block multiplies by the *first* block's ``self.scale.item()``.

When a TensorRT build fails, the backend falls back to the same, already folded graph
(``pass_through_build_failures=False``, the default), so the fallback computes the stale number too.

Here upstream's folding still runs, unchanged, but folds a tensor only when it is a constant of the graph: a
``get_attr`` (a tensor Dynamo installed into the graph module, with ``install_free_tensors=True``) that nothing
in the graph writes. Every placeholder's ``.item()`` stays in the graph, as on 2.11 and older: with
``capture_scalar_outputs=True`` AOT tracing turns it into ``aten._local_scalar_dense``, which runs in PyTorch
between TensorRT blocks; otherwise AOT tracing raises ``DataDependentOutputException`` and Dynamo runs that graph
in PyTorch (a graph break; the backend's own fallback does the same with ``pass_through_build_failures=False``).
Both give eager's numbers on every call, at the cost of a TensorRT block boundary where upstream folded.

Reproducer for an upstream report (2.12.0-2.14.0, with a GPU; measured here with ``options={"dryrun": True}``
on the CPU: 18 instead of 27 on 2.12.1, 2.13.0 and 2.14.0)::

    import torch, torch_tensorrt

    def scale_by_sum(x):
        return x * x.sum().item()

    compiled = torch.compile(scale_by_sum, backend="torch_tensorrt", options={"min_block_size": 1})
    for value in (1.0, 2.0, 3.0):
        x = torch.full((3,), value, device="cuda")
        print(compiled(x)[0].item(), scale_by_sum(x)[0].item())   # 3 3, 12 12, then 18 27

The decision below works on plain ``torch.fx`` nodes; ``apply`` puts it in front of the module global
``_get_actual_tensor`` that ``fold_get_attr_item_calls`` calls for each ``.item()`` it could fold.
"""

import functools
import inspect
import operator
from typing import Any, Callable, Optional

import torch
from torch.fx import Graph, GraphModule, Node
from torch.fx.node import map_arg

from trt_compat.patching import Defect, NotApplicable, Patch, PatchContext, TargetChanged
from trt_compat.probing import has_module

_FOLD_MODULE = "torch_tensorrt.dynamo.lowering.passes.fold_get_attr_item_calls"
_BACKENDS_MODULE = "torch_tensorrt.dynamo.backend.backends"
# Dynamo's form of `t.data` (torch 2.5 and newer): a write through it does not show on `t`'s version counter.
_DATA_ACCESS = getattr(torch._C._autograd, "_get_data_attr", None)


def item_folds_to_constant(node: Node) -> bool:
    """Whether ``node.item()`` is the same number at every call of the compiled graph, so it may be folded.

    Only a ``get_attr`` qualifies: an attribute of the graph module, installed for this graph alone (by Dynamo
    with ``install_free_tensors=True``), which Torch-TensorRT treats as a constant like any weight. A placeholder
    never does: it is an input, and the graph is called again with other tensors (run-time values, the numbers
    Dynamo passes on at a graph break, the parameters of another instance of the same module class). A
    ``get_attr`` the graph writes (an in-place op, ``out=``, ``setitem``, a view or a tied tensor sharing its
    version counter, ``.data``) does not qualify either, nor one whose traced value is not recorded (it cannot be
    shown unwritten). A few microseconds per node.
    """
    if node.op != "get_attr":
        return False
    traced = node.meta.get("example_value", node.meta.get("val"))
    if not isinstance(traced, torch.Tensor):
        return False
    try:
        # Dynamo traced the graph on this fake tensor: every in-place write to it, or to a view of it, counted.
        written = traced._version != 0
    except RuntimeError:  # inference tensors have no version counter
        return False
    return not written and not _has_data_access(node.graph)


def _has_data_access(graph: Graph) -> bool:
    if _DATA_ACCESS is None:
        return False
    find_nodes = getattr(graph, "find_nodes", None)
    if find_nodes is not None:
        return bool(find_nodes(op="call_function", target=_DATA_ACCESS, sort=False))
    return any(node.op == "call_function" and node.target is _DATA_ACCESS for node in graph.nodes)


# ------------------------------------------------------------------------------------------------------------------
# Defect reproducers (run by `python -m trt_compat verify` and the compatibility matrix)


class ScaleBySum(torch.nn.Module):
    """``.item()`` breaks the graph (Dynamo's default): the number reaches the next graph as an input."""

    def forward(self, x):
        return x * x.sum().item()


class ScaleByInput(torch.nn.Module):
    """An input's ``.item()``, captured in the graph (``capture_scalar_outputs=True``)."""

    def forward(self, x, s):
        return x * s.item()


class Scale(torch.nn.Module):
    """A block with a scalar parameter read with ``.item()``."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))

    def forward(self, x):
        return x * self.scale.item()


class RunBlock(torch.nn.Module):
    """One compiled function applied to several blocks: Dynamo compiles the block's ``forward`` once for all."""

    def forward(self, block, x):
        return block(x)


def _require_fold_pass() -> None:
    if not has_module(_FOLD_MODULE):
        raise NotApplicable("this release has no fold_get_attr_item_calls (added in 2.12.0)")


def _first_difference(probe: Any, model: Any, calls: list, **options: Any) -> Optional[str]:
    """Compile ``model`` on the first call's inputs, run every call, and compare each output with eager's."""
    to_device = (lambda value: value.cuda()) if probe.on_gpu else (lambda value: value)
    calls = [tuple(to_device(value) for value in inputs) for inputs in calls]
    compiled = probe.compile(model, *calls[0], **options)
    outputs = [compiled.output] + [compiled(*inputs) for inputs in calls[1:]]
    for number, (inputs, output) in enumerate(zip(calls, outputs), 1):
        with torch.no_grad():
            difference = probe.same(output, model(*inputs))
        if difference is not None:
            return f"call {number} of {len(calls)}: {difference}"
    return None


def check_graph_break_scalar(probe: Any) -> Optional[str]:
    _require_fold_pass()
    calls = [(torch.full((3,), value),) for value in (1.0, 2.0, 3.0)]
    difference = _first_difference(probe, ScaleBySum().eval(), calls)
    return None if difference is None else f"x * x.sum().item() (Dynamo's default graph break), {difference}"


def check_captured_input_scalar(probe: Any) -> Optional[str]:
    _require_fold_pass()
    calls = [(torch.ones(3), torch.tensor(value)) for value in (2.0, 3.0)]
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        difference = _first_difference(probe, ScaleByInput().eval(), calls)
    return None if difference is None else f"x * s.item() (capture_scalar_outputs), {difference}"


def check_shared_block_parameter(probe: Any) -> Optional[str]:
    _require_fold_pass()
    first, second = Scale(2.0).eval(), Scale(3.0).eval()
    if probe.on_gpu:
        first, second = first.cuda(), second.cuda()
    calls = [(first, torch.ones(3)), (second, torch.ones(3))]
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        difference = _first_difference(probe, RunBlock().eval(), calls)
    return None if difference is None else f"x * self.scale.item() in two blocks of one class, {difference}"


def fold_item_calls(gm: GraphModule, sample_inputs: Any, may_fold: Callable[[Node], bool]) -> GraphModule:
    """A stand-in for the backend's ``fold_get_attr_item_calls`` (2.12.0-2.14.0), folding where ``may_fold`` says
    so: each ``t.item()`` of a graph input or ``get_attr`` replaced by the number ``t`` holds at compile time.
    Upstream's rule is ``may_fold = lambda node: True``; trt_compat's is :func:`item_folds_to_constant`."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    for node in list(gm.graph.nodes):
        if not (node.op == "call_method" and node.target == "item" and node.args[0].op in ("placeholder", "get_attr")):
            continue
        source = node.args[0]
        if not may_fold(source):
            continue
        if source.op == "placeholder":
            tensor = sample_inputs[placeholders.index(source)]
        else:
            tensor = operator.attrgetter(source.target)(gm)
        fold = {node: tensor.item()}
        for user in list(node.users):
            user.args, user.kwargs = map_arg((user.args, user.kwargs), lambda arg, fold=fold: fold.get(arg, arg))
        gm.graph.erase_node(node)
    gm.recompile()
    return gm


def _folding_backend(gm: GraphModule, sample_inputs: Any, may_fold: Callable[[Node], bool]) -> Callable:
    return fold_item_calls(gm, sample_inputs, may_fold).forward


def demonstrate(say: Callable[[str], None]) -> list:
    """``trt-compat demo``: ``x * s.item()`` compiled once (``capture_scalar_outputs``) and called with two values of
    ``s``, upstream's folding rule (a stand-in) and trt_compat's, against eager."""
    from trt_compat.demo import WITH, WITHOUT, Check, identical

    say(
        "upstream: from 2.12.0 the torch.compile backend replaces t.item() by the number t holds at compile time for "
        "any graph input, not only for constants: called again with other values, the compiled graph keeps the "
        "first call's number (wrong numbers, no error)."
    )
    model, x = ScaleByInput().eval(), torch.ones(3)
    scales = (2.0, 3.0)
    outputs = {}
    for name, may_fold in (("without", lambda node: True), ("with", item_folds_to_constant)):
        torch._dynamo.reset()
        with torch._dynamo.config.patch(capture_scalar_outputs=True), torch.no_grad():
            compiled = torch.compile(model, backend=functools.partial(_folding_backend, may_fold=may_fold))
            outputs[name] = [compiled(x, torch.tensor(s)) for s in scales]
        torch._dynamo.reset()
    with torch.no_grad():
        expected = [model(x, torch.tensor(s)) for s in scales]

    def firsts(results: list) -> str:
        return ", ".join(f"{r[0].item():g}" for r in results)

    exact = identical(outputs["with"], expected)
    say(
        f"x * s.item() compiled once (capture_scalar_outputs), called with x = ones and s = "
        f"{', '.join(f'{s:g}' for s in scales)}: eager {firsts(expected)}"
    )
    say(f"without trt_compat (a stand-in: upstream's folding rule): {firsts(outputs['without'])}")
    say(
        f"with trt_compat: {firsts(outputs['with'])}; the .item() of an input stays in the graph (in PyTorch, "
        f"between TensorRT blocks, as on 2.11 and older); every call bit-identical to eager: {exact}"
    )
    return [
        Check(
            PATCH.name,
            WITHOUT,
            "the stand-in keeps the first call's number",
            not identical(outputs["without"], expected),
        ),
        Check(PATCH.name, WITH, "every call bit-identical to eager", exact),
    ]


PATCH = Patch(
    name="fold_only_constants",
    title="the torch.compile backend folds .item() only of graph constants, never of graph inputs",
    issue=None,
    first_affected="2.12.0",
    fixed_in=None,
    why=(
        "From 2.12.0 the torch.compile backend's fold_get_attr_item_calls replaces t.item() by the number t holds "
        "at compile time for any input of the Dynamo graph, not only for constants: the compiled graph then keeps "
        "the first call's number when it is called again with other values (a scalar Dynamo passes on at a graph "
        "break, an input's .item() with capture_scalar_outputs, the scalar parameter of another instance of the "
        "same module class). Wrong numbers, no error. Unchanged up to the newest release."
    ),
    defects=(
        Defect(
            key="graph_break_scalar",
            title="x * x.sum().item() keeps the number of an earlier call (Dynamo's default configuration)",
            check=check_graph_break_scalar,
        ),
        Defect(
            key="captured_input_scalar",
            title="x * s.item() keeps the first call's s (capture_scalar_outputs=True)",
            check=check_captured_input_scalar,
        ),
        Defect(
            key="shared_block_parameter",
            title="blocks of one module class all use the first block's scalar parameter (capture_scalar_outputs)",
            check=check_shared_block_parameter,
        ),
    ),
)


def _constants_only(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    # Upstream leaves an .item() in the graph when the helper finds no tensor for it.
    origin = args[0] if args else kwargs.get("origin")
    if isinstance(origin, Node) and item_folds_to_constant(origin):
        return wrapped(*args, **kwargs)
    return None


def _input_item_survives(folder: Callable) -> bool:
    """Whether ``folder`` now leaves ``x.item()`` of a graph input in the graph (upstream folds it by itself)."""
    graph = Graph()
    graph.output(graph.call_method("item", (graph.placeholder("x"),)))
    folded = folder(GraphModule(torch.nn.Module(), graph), [torch.tensor(2.0)])
    return any(node.op == "call_method" and node.target == "item" for node in folded.graph.nodes)


def apply(ctx: PatchContext) -> None:
    fold = ctx.import_module(_FOLD_MODULE)
    helper = ctx.require_attr(fold, "_get_actual_tensor", callable)
    if list(inspect.signature(helper).parameters)[:1] != ["origin"]:
        raise TargetChanged(f"{_FOLD_MODULE}._get_actual_tensor no longer takes the node to fold first")
    folder = inspect.unwrap(ctx.require_attr(fold, "fold_get_attr_item_calls", callable))
    # Replacing the module global changes what the folding calls only if it looks the name up there at each call.
    names = getattr(getattr(folder, "__code__", None), "co_names", ())
    if "_get_actual_tensor" not in names or getattr(folder, "__globals__", None) is not vars(fold):
        raise TargetChanged(f"{_FOLD_MODULE}.fold_get_attr_item_calls no longer calls the module's _get_actual_tensor")
    backends = ctx.import_module(_BACKENDS_MODULE)
    if inspect.unwrap(getattr(backends, "fold_get_attr_item_calls", None)) is not folder:
        raise TargetChanged(f"{_BACKENDS_MODULE} no longer calls {_FOLD_MODULE}.fold_get_attr_item_calls")
    ctx.wrap_function(fold, "_get_actual_tensor", _constants_only)
    # That upstream keeps an .item() the helper finds no tensor for is behaviour, not a name: try it.
    if not _input_item_survives(folder):
        raise TargetChanged(f"{_FOLD_MODULE}.fold_get_attr_item_calls folds .item() without _get_actual_tensor")

"""Keep every clone/contiguous/detach the torch.compile backend does not need to remove for ``.item()`` folding.

Not reported upstream yet. Torch-TensorRT 2.12.0 added ``fold_get_attr_item_calls`` to its ``torch.compile``
backend: before AOT tracing, ``backends._pretraced_backend`` turns ``param.item()`` into a Python number,
because AOT tracing on fake tensors cannot evaluate ``.item()``. So that ``self.scale.clone().item()`` is seen as
an ``.item()`` of the parameter, the pass first calls ``_remove_identity_ops``, which replaces *every*
``clone``, ``contiguous``, ``detach`` and ``alias`` node of the graph (``call_method`` and ``aten`` forms) by its
input -- not only those on the way to an ``.item()``. On 2.12.0, 2.12.1, 2.13.0 and 2.14.0 (the pass is absent
from 2.11.0 and older):

* ``y.transpose(1, 2).contiguous().view(B, T, C)``, the last step of GPT-style attention, loses its
  ``contiguous`` and AOT tracing raises ``ValueError: Cannot view a tensor with shape ... and strides ...``;
* a clone that is then changed in place no longer protects its source, so the model silently computes
  something else: ``y = x.clone(); y.mul_(2); return x + y`` gives ``4 * x`` instead of ``3 * x``. The pass
  changes the Dynamo graph in place, so when a TensorRT build then fails and the backend falls back to running
  that graph in PyTorch (the default, ``pass_through_build_failures=False``), the fallback computes it too.

(pytorch/TensorRT#3823 shows the same ``Cannot view`` message for ``nn.MultiheadAttention``, but it was filed
in 2025 against ``torch_tensorrt.compile(ir="dynamo")``, which never runs this pass: a different cause.)

Here an identity node is removed only where the folding needs it: on a chain of identity nodes that starts
at an ``nn.Module`` parameter or buffer (a placeholder Dynamo lifted from a module) or at a ``get_attr``, and
whose every node leads to ``.item()`` calls and nothing else. Upstream's folding code runs unchanged and still
folds ``self.eps.item()``, ``self.scale.clone().item()`` and ``p.detach().item()`` (unless the companion patch
``fold_only_constants`` is applied: a parameter's number can differ between calls of one compiled graph, so that
patch lets upstream fold graph constants only). Where folding through a chain could change a number, the chain
is kept, so the ``.item()`` is not folded -- as on 2.11 and older:

* the root may be written in the graph (an in-place op, ``setitem``, ``out=``, ``inplace=True``, a module call or
  a higher-order op on it or on a tensor sharing its storage): the value read by ``.item()`` depends on where;
* the root is an ordinary graph input (or a global tensor): its value is not constant from one call to the
  next, and a folded number would be that of the first call.

Reproducer for an upstream report (2.12.0-2.14.0, with a GPU; measured here with ``options={"dryrun": True}``
on the CPU: the difference is 1.0 on 2.12.0-2.14.0 and 0.0 on 2.11.0)::

    import torch, torch_tensorrt

    class CloneThenScale(torch.nn.Module):
        def forward(self, x):
            y = x.clone()
            y.mul_(2)
            return x + y

    model, x = CloneThenScale().eval().cuda(), torch.ones(2, 3, device="cuda")
    compiled = torch.compile(model, backend="torch_tensorrt", options={"min_block_size": 1})
    print((compiled(x) - model(x)).abs().max())   # 1.0: the clone was removed before tracing

The function below works on plain ``torch.fx`` graphs; ``apply`` puts it in the place of the module global
``_remove_identity_ops`` that ``fold_get_attr_item_calls`` calls.
"""

import inspect
import operator
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Set

import torch
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg
from torch.multiprocessing.reductions import StorageWeakRef

from trt_compat.patching import Defect, NotApplicable, Patch, PatchContext, TargetChanged
from trt_compat.probing import has_module

aten = torch.ops.aten

# The identity ops upstream removes (2.12.0-2.14.0; some 2.12 nightlies also had "to").
_IDENTITY_METHODS = frozenset({"clone", "contiguous", "detach"})
_IDENTITY_FUNCTIONS = frozenset({aten.clone.default, aten.detach.default, aten.alias.default, aten.contiguous.default})

_IN_PLACE_OPERATORS = frozenset(
    {
        operator.setitem,
        operator.iadd,
        operator.isub,
        operator.imul,
        operator.itruediv,
        operator.ifloordiv,
        operator.imod,
        operator.ipow,
        operator.iand,
        operator.ior,
        operator.ixor,
        operator.ilshift,
        operator.irshift,
        operator.imatmul,
        operator.iconcat,
    }
)
_IN_PLACE_DUNDERS = frozenset(
    {
        "__setitem__",
        "__iadd__",
        "__isub__",
        "__imul__",
        "__itruediv__",
        "__ifloordiv__",
        "__imod__",
        "__ipow__",
        "__iand__",
        "__ior__",
        "__ixor__",
        "__ilshift__",
        "__irshift__",
        "__imatmul__",
    }
)

_FOLD_MODULE = "torch_tensorrt.dynamo.lowering.passes.fold_get_attr_item_calls"
_BACKENDS_MODULE = "torch_tensorrt.dynamo.backend.backends"


def remove_identity_ops_before_item(gm: GraphModule) -> bool:
    """Replace by its input each identity node on a chain from a module parameter/buffer or get_attr to ``.item()``.

    A chain qualifies when every identity node on it is used only by ``.item()`` calls and by other such
    nodes, its root is a ``get_attr`` or a placeholder Dynamo lifted from an ``nn.Module`` parameter or buffer,
    and nothing in the graph may write to the root or to a tensor sharing its storage. Every other identity
    node stays. Returns whether a node was removed and, like upstream's ``_remove_identity_ops``, leaves
    regenerating the code to its caller (``fold_get_attr_item_calls`` recompiles once it has folded). Linear in
    the size of the graph; for a graph without ``.item()`` it only looks through the graph's call_method nodes.
    """
    if not _has_item_call(gm.graph):
        return False
    tops = _item_chain_tops(gm.graph)
    roots = {top.args[0] for top in tops.values() if _folding_root(top.args[0])}
    if not roots:
        return False
    foldable = roots - _possibly_written(gm.graph, roots)
    removed = [node for node, top in tops.items() if top.args[0] in foldable]
    for node in removed:  # graph order: a chain's top first, so each node's input is already the root
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
    return bool(removed)


def _is_identity(node: Node) -> bool:
    is_identity_op = (node.op == "call_method" and node.target in _IDENTITY_METHODS) or (
        node.op == "call_function" and node.target in _IDENTITY_FUNCTIONS
    )
    return is_identity_op and bool(node.args) and isinstance(node.args[0], Node)


def _is_item_call(node: Node) -> bool:
    # What upstream folds: `x.item()` with no other argument.
    return node.op == "call_method" and node.target == "item" and len(node.args) == 1 and not node.kwargs


def _has_item_call(graph: torch.fx.Graph) -> bool:
    find_nodes = getattr(graph, "find_nodes", None)
    if find_nodes is not None:
        return bool(find_nodes(op="call_method", target="item", sort=False))
    return any(_is_item_call(node) for node in graph.nodes)


def _item_chain_tops(graph: torch.fx.Graph) -> Dict[Node, Node]:
    """Each identity node whose uses all end in ``.item()`` calls -> the first identity node of its chain.

    In graph order. The first node's input is the chain's root.
    """
    feeds_items: Set[Node] = set()
    for node in reversed(graph.nodes):  # users come after their inputs, so they are decided first
        if _is_identity(node) and node.users and all(_is_item_call(u) or u in feeds_items for u in node.users):
            feeds_items.add(node)
    tops: Dict[Node, Node] = {}
    for node in graph.nodes:
        if node in feeds_items:
            tops[node] = tops.get(node.args[0], node)
    return tops


def _folding_root(node: Node) -> bool:
    """Whether folding an ``.item()`` of ``node`` gives the same number at every call, as upstream assumes."""
    if node.op == "get_attr":
        return True
    if node.op != "placeholder":
        return False
    # Dynamo describes where each graph input comes from; parameters and buffers come from nn.Module state.
    source = getattr(node.meta.get("grapharg"), "source", None)
    guard_source = getattr(source, "guard_source", None)
    if callable(guard_source):  # a method on older torch, a property on newer
        guard_source = guard_source()
    return any(
        callable(getattr(guard_source, test, None)) and getattr(guard_source, test)()
        for test in ("is_specialized_nn_module", "is_unspecialized_nn_module")
    )


# ------------------------------------------------------------------------------------------------------------------
# Which roots may be written in the graph


def _possibly_written(graph: torch.fx.Graph, roots: Set[Node]) -> Set[Node]:
    """The ``roots`` that a node of ``graph`` may write to, directly or through a tensor sharing their storage.

    Storage sharing is read from the fake values Dynamo (``example_value``) or export (``val``) recorded on
    each node; a node without one is assumed to share storage with its inputs. One pass in graph order.
    """
    roots_by_storage: Dict[StorageWeakRef, Set[Node]] = {}
    roots_of_unknown_storage: Set[Node] = set()
    for root in roots:
        keys = _storages(root)
        if keys is None:
            roots_of_unknown_storage.add(root)
        for key in keys or ():
            roots_by_storage.setdefault(key, set()).add(root)
    aliases: Dict[Node, Set[Node]] = {}  # node -> the roots whose storage it may share
    storages: Dict[Node, Optional[FrozenSet]] = {}
    written: Set[Node] = set()
    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            # Graph inputs may already share storage with a root (tied weights, views of one buffer).
            own = _storages(node)
            if own is None:
                shared = set(roots)
            else:
                shared = set(roots_of_unknown_storage).union(*(roots_by_storage.get(key, ()) for key in own))
            if node in roots:
                shared.add(node)
        else:
            inputs = [source for source in node.all_input_nodes if source in aliases]
            if not inputs:
                continue
            for target in _written_inputs(node):
                written |= aliases.get(target, set())
            own = _storages(node)
            shared = set()
            for source in inputs:
                if _may_share(own, storages[source]):
                    shared |= aliases[source]
        if shared:
            aliases[node], storages[node] = shared, own
    return written


def _may_share(a: Optional[FrozenSet], b: Optional[FrozenSet]) -> bool:
    return a is None or b is None or bool(a & b)


def _storages(node: Node) -> Optional[FrozenSet]:
    """Storages of the tensors ``node`` produces (empty for non-tensors); None when unknown."""
    for key in ("val", "example_value"):
        if key in node.meta:
            return _value_storages(node.meta[key])
    return None


def _value_storages(value: Any) -> Optional[FrozenSet]:
    if isinstance(value, torch.Tensor):
        try:
            return frozenset((StorageWeakRef(value.untyped_storage()),))
        except (RuntimeError, NotImplementedError, TypeError):  # sparse or other storage-less tensors
            return None
    if isinstance(value, (list, tuple)):
        found: Set = set()
        for item in value:
            keys = _value_storages(item)
            if keys is None:
                return None
            found |= keys
        return frozenset(found)
    scalars = (
        bool,
        int,
        float,
        complex,
        str,
        torch.SymInt,
        torch.SymFloat,
        torch.SymBool,
        torch.dtype,
        torch.device,
        torch.layout,
        torch.memory_format,
    )
    if value is None or isinstance(value, scalars):
        return frozenset()
    return None


def _written_inputs(node: Node) -> Iterable[Node]:
    """The input nodes ``node`` may write to (in-place ops, ``out=``, ``inplace=True``); unknown calls: all."""
    if node.op == "call_module":
        return node.all_input_nodes  # a module (an nn.ReLU(inplace=True), say) may write to anything it is given
    if node.op == "call_method":
        name = node.target
    elif node.op == "call_function":
        if isinstance(node.target, torch._ops.HigherOrderOperator):
            return node.all_input_nodes
        if isinstance(node.target, torch._ops.OpOverload):
            return _schema_written_inputs(node)
        if node.target in _IN_PLACE_OPERATORS:
            return _nodes_in(node.args[:1])
        name = getattr(node.target, "__name__", "")
    else:
        return ()
    written: List[Node] = _nodes_in(node.kwargs.get("out"))
    if name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.startswith("__")):
        written += node.all_input_nodes if node.op == "call_function" else _nodes_in(node.args[:1])
    elif node.op == "call_function" and _inplace_requested(node):
        written += _nodes_in(node.args[:1]) or node.all_input_nodes
    return written


def _schema_written_inputs(node: Node) -> List[Node]:
    written: List[Node] = []
    for index, argument in enumerate(node.target._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        value = node.args[index] if index < len(node.args) else node.kwargs.get(argument.name)
        written += _nodes_in(value)
    return written


def _inplace_requested(node: Node) -> bool:
    """Whether a call such as ``F.relu(x, inplace=True)`` (or ``F.relu(x, True)``) asks for an in-place op."""
    if node.kwargs.get("inplace"):
        return True
    parameters = _parameters(node.target)
    if "inplace" not in parameters:
        return False
    position = parameters.index("inplace")
    return position < len(node.args) and node.args[position] is not False


def _parameters(target: Callable) -> List[str]:
    try:
        return list(inspect.signature(target).parameters)
    except (TypeError, ValueError):  # builtins without a signature have no `inplace` parameter
        return []


def _nodes_in(value: Any) -> List[Node]:
    found: List[Node] = []
    map_arg(value, found.append)
    return found


# ------------------------------------------------------------------------------------------------------------------
# Defect reproducers (run by `python -m trt_compat verify` and the compatibility matrix)


class CloneThenScale(torch.nn.Module):
    """A clone changed in place must leave its source as it was."""

    def forward(self, x):
        y = x.clone()
        y.mul_(2)
        return x + y


class ContiguousViewAttention(torch.nn.Module):
    """The end of GPT-style attention: heads back into channels with ``transpose().contiguous().view()``."""

    heads = 2

    def forward(self, x):
        batch, tokens, channels = x.shape
        q = x.view(batch, tokens, self.heads, channels // self.heads).transpose(1, 2)
        y = torch.softmax(q @ q.transpose(-2, -1), dim=-1) @ q
        return y.transpose(1, 2).contiguous().view(batch, tokens, channels)


def _require_fold_pass() -> None:
    if not has_module(_FOLD_MODULE):
        raise NotApplicable("this release has no fold_get_attr_item_calls (added in 2.12.0)")


def check_clone_mutation(probe: Any) -> Optional[str]:
    _require_fold_pass()
    model, x = CloneThenScale().eval(), torch.ones(2, 3)
    difference = probe.same(probe.compile(model, x).output, model(x))
    return None if difference is None else f"y = x.clone(); y.mul_(2); x + y differs from eager: {difference}"


def check_contiguous_view(probe: Any) -> Optional[str]:
    _require_fold_pass()
    model, x = ContiguousViewAttention().eval(), torch.linspace(-1.0, 1.0, 64).view(2, 4, 8)
    what = "transpose(1, 2).contiguous().view(B, T, C)"
    try:
        compiled = probe.compile(model, x)
    except ValueError as exc:
        if "Cannot view a tensor" not in str(exc):
            raise
        return f"{what} does not compile: {str(exc).splitlines()[0]}"
    difference = probe.same(compiled.output, model(x))
    return None if difference is None else f"{what} differs from eager: {difference}"


def remove_every_identity_op(gm: GraphModule) -> None:
    """A stand-in for upstream's ``_remove_identity_ops`` (2.12.0-2.14.0): every clone, contiguous, detach and alias
    node replaced by its input (the code is regenerated by the caller, as by the backend's later passes)."""
    for node in list(gm.graph.nodes):
        if _is_identity(node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


class CloneThenScaleByParameter(torch.nn.Module):
    """A clone changed in place, and a scalar parameter read with ``.clone().item()``, which upstream folds."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        y = x.clone()
        y.mul_(2)
        return (x + y) * self.scale.clone().item()


def _traced_with_values(model: torch.nn.Module, x: torch.Tensor) -> GraphModule:
    """``model`` as an FX graph with each node's value recorded in ``meta['example_value']``, as Dynamo records the
    values it traces with (real ones here, from a run on a copy of ``x``)."""
    gm = torch.fx.symbolic_trace(model)

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node: Node) -> Any:
            node.meta["example_value"] = super().run_node(node)
            return node.meta["example_value"]

    Recorder(gm).run(x.clone())
    return gm


def demonstrate(say: Callable[[str], None]) -> list:
    """``trt-compat demo``: a graph with a clone changed in place and a ``self.scale.clone().item()``, after
    upstream's identity removal (a stand-in) and after trt_compat's, against eager."""
    from trt_compat.demo import WITH, WITHOUT, Check, identical

    say(
        "upstream: from 2.12.0 the torch.compile backend's .item() folding first removes every clone, contiguous and "
        "detach of the graph, not only those before an .item(): y = x.clone(); y.mul_(2); x + y then doubles x "
        "itself (wrong numbers, no error), and .transpose().contiguous().view() attention no longer compiles."
    )
    model, x = CloneThenScaleByParameter().eval(), torch.ones(2, 3)
    with torch.no_grad():
        expected = model(x.clone())
        results, removed = {}, {}
        for name, removal in (("without", remove_every_identity_op), ("with", remove_identity_ops_before_item)):
            gm = _traced_with_values(model, x)
            identities = {node.name for node in gm.graph.nodes if _is_identity(node)}
            before_item = [n.name for n in gm.graph.nodes if n.name in identities and all(map(_is_item_call, n.users))]
            removal(gm)
            gm.recompile()  # as the backend's later passes do
            removed[name] = sorted(identities - {node.name for node in gm.graph.nodes})
            results[name] = gm(x.clone())
    exact = identical(results["with"], expected)
    say(f"y = x.clone(); y.mul_(2); (x + y) * self.scale.clone().item(), x = ones: eager {expected[0, 0].item():g}")
    say(
        f"without trt_compat (a stand-in: upstream's removal of every identity node): "
        f"{results['without'][0, 0].item():g}; removed {', '.join(removed['without'])}"
    )
    say(
        f"with trt_compat: {results['with'][0, 0].item():g}; removed {', '.join(removed['with']) or 'nothing'}, the "
        f"clone before .item() (upstream still folds the parameter), kept x.clone(); bit-identical to eager: {exact}"
    )
    return [
        Check(
            PATCH.name,
            WITHOUT,
            "the stand-in's removal changes the numbers",
            not identical(results["without"], expected),
        ),
        Check(
            PATCH.name,
            WITH,
            "only the clone before .item() removed",
            removed["with"] == sorted(before_item),
            str(removed["with"]),
        ),
        Check(PATCH.name, WITH, "outputs bit-identical to eager", exact),
    ]


PATCH = Patch(
    name="keep_identity_ops",
    title="clone/contiguous/detach survive the torch.compile backend's .item() folding",
    issue=None,
    first_affected="2.12.0",
    fixed_in=None,
    why=(
        "From 2.12.0 the torch.compile backend's fold_get_attr_item_calls removes every clone, contiguous, detach "
        "and alias node of the Dynamo graph before AOT tracing, not only those between a parameter and its "
        ".item(): .transpose().contiguous().view() attention no longer compiles, and a clone changed in place "
        "no longer protects its source (wrong numbers, no error). Unchanged up to the newest release."
    ),
    defects=(
        Defect(
            key="clone_mutation",
            title="a clone changed in place also changes its source (wrong numbers)",
            check=check_clone_mutation,
        ),
        Defect(
            key="contiguous_view",
            title=".transpose().contiguous().view() attention fails AOT tracing",
            check=check_contiguous_view,
        ),
    ),
)


def _scoped_removal(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> bool:
    return remove_identity_ops_before_item(*args, **kwargs)


def apply(ctx: PatchContext) -> None:
    fold = ctx.import_module(_FOLD_MODULE)
    ctx.require_attr(fold, "_remove_identity_ops", callable)
    folder = inspect.unwrap(ctx.require_attr(fold, "fold_get_attr_item_calls", callable))
    # Replacing the module global changes what the folding calls only if it looks the name up there at each call.
    names = getattr(getattr(folder, "__code__", None), "co_names", ())
    if "_remove_identity_ops" not in names or getattr(folder, "__globals__", None) is not vars(fold):
        raise TargetChanged(
            f"{_FOLD_MODULE}.fold_get_attr_item_calls no longer calls the module's _remove_identity_ops"
        )
    backends = ctx.import_module(_BACKENDS_MODULE)
    if inspect.unwrap(getattr(backends, "fold_get_attr_item_calls", None)) is not folder:
        raise TargetChanged(f"{_BACKENDS_MODULE} no longer calls {_FOLD_MODULE}.fold_get_attr_item_calls")
    ctx.wrap_function(fold, "_remove_identity_ops", _scoped_removal)

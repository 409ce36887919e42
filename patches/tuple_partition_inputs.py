"""Repair partition inputs whose metadata is a tuple or missing before Torch-TensorRT reads it.

Upstream defect pytorch/TensorRT#3185. ``partitioning.construct_submodule_inputs`` turns every
placeholder of an accelerated submodule into a ``torch_tensorrt.Input`` using the placeholder's
``meta['val']`` (or ``meta['tensor_meta']``). The partitioner (``split_by_tags`` for the fast
partitioner, the capability-based fuser for the global one) fills that metadata with a shallow
copy of the metadata of the parent-graph node producing the value, so whatever is wrong there is
copied across the boundary:

* a lowering pass may reuse a replaced node's ``meta``: the fused ``max_pool2d.default`` node built
  from ``max_pool2d_with_indices`` keeps the ``(values, indices)`` tuple although it returns one
  tensor (upstream raises ``ValueError: The meta val for input node ... <class 'tuple'>``);
* a pass may create the node with empty metadata (``AssertionError: ... does not contain
  metadata``);
* a multi-output op may end one partition while its ``getitem`` consumers start the next, so a
  real tuple crosses into a TensorRT engine, which only accepts tensors.

This module inspects the placeholders of a submodule, finds the node feeding each bad one in the
parent graph, recomputes the value that really flows there on fake tensors, and either rewrites
the placeholder's metadata (single tensor) or moves the tuple indexing into the parent so that
only tensors cross the boundary. Placeholders whose metadata upstream already accepts are never
touched, so Inputs for healthy graphs stay exactly as upstream builds them. Nothing here imports
torch_tensorrt: the functions work on plain ``torch.fx`` graphs; ``apply`` at the end installs them.
"""

import dataclasses
import inspect
import logging
import operator
import weakref
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

import torch
from torch._guards import detect_fake_mode
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg
from torch.fx.passes.shape_prop import TensorMetadata, _extract_tensor_metadata
from torch.utils._pytree import tree_leaves, tree_map

from trt_compat._fake import running_on_fake
from trt_compat.describe import op_key, op_name
from trt_compat.patching import Defect, Patch, PatchContext, TargetChanged
from trt_compat.probing import Probe


def describe_value(value: Any) -> str:
    from trt_compat.describe import value as describe

    return describe(value, detail=True)


logger = logging.getLogger("trt_compat")

_REMEDY = (
    "Remedy: add {op} to torch_executed_ops together with its consumers so the value never "
    "enters a TensorRT engine, or make the lowering pass that created it set a single-tensor "
    "meta['val']; or leave trt_compat's tuple_pooling patch enabled."
)
_REMEDY_ALREADY_IN_TORCH = (
    "Remedy: {op} already runs in PyTorch (it is in torch_executed_ops), but its consumers do "
    "not: add them to torch_executed_ops too so the value never enters a TensorRT engine, or make "
    "the lowering pass that created it set a single-tensor meta['val']."
)


def _remedy(op: str, torch_executed: FrozenSet[str] = frozenset()) -> str:
    template = _REMEDY_ALREADY_IN_TORCH if op_key(op) in torch_executed else _REMEDY
    return template.format(op=op)


class PartitionInputError(ValueError):
    """A submodule input cannot be described as a TensorRT input, even after repair.

    Subclasses ValueError because upstream raises ValueError for tuple-valued inputs, so callers
    that already handle that keep working.
    """


class _Unrecoverable(Exception):
    """The true value of a node cannot be recomputed; carries the reason for the final error."""


@dataclasses.dataclass(frozen=True)
class _Partition:
    """What is remembered of the partitioned module that calls a submodule. Everything is weak so
    remembering a partition never extends the life of any graph."""

    parent: "weakref.ref[GraphModule]"
    calls: List["weakref.ref[Node]"]  # the call_module nodes calling the submodule there
    torch_executed: FrozenSet[str]  # the ops the user asked to run in PyTorch


_PARENTS: "weakref.WeakKeyDictionary[torch.nn.Module, _Partition]" = weakref.WeakKeyDictionary()


def remember_partition(parent: GraphModule, torch_executed_ops: Iterable[Any] = ()) -> None:
    """Record ``parent`` as the graph that calls each of its GraphModule children.

    ``construct_submodule_inputs`` only receives the child, but repairing it needs the node that
    feeds each input, which lives in the parent; the ops the user keeps in PyTorch shape the
    remedy an error suggests.
    """
    torch_executed = frozenset(op_key(op) for op in torch_executed_ops or ())
    parent_ref = weakref.ref(parent)
    calls: Dict[torch.nn.Module, List[weakref.ref]] = {}
    for node in parent.graph.nodes:
        if node.op == "call_module":
            child = _submodule(parent, node.target)
            if isinstance(child, GraphModule):
                calls.setdefault(child, []).append(weakref.ref(node))
    for child, refs in calls.items():
        _PARENTS[child] = _Partition(parent_ref, refs, torch_executed)


def partition_parent(submodule: torch.nn.Module) -> Optional[Tuple[GraphModule, List[Node]]]:
    """The remembered parent of ``submodule`` and its call_module nodes calling it, or None.

    Passes may rewrite the parent graph after it was remembered, so the calls found then are used
    only if each is still in the graph and still calls ``submodule``; otherwise they are looked up
    again. Not scanning the parent every time matters: this runs once per accelerated block, and
    a scan per block is quadratic in the number of blocks.
    """
    remembered = _PARENTS.get(submodule)
    parent = remembered.parent() if remembered is not None else None
    if parent is None:
        return None
    calls = [ref() for ref in remembered.calls]
    if not all(_calls_submodule(parent, call, submodule) for call in calls):
        calls = _calls_of(parent, submodule)
    return (parent, calls) if calls else None


def boundary_problems(submodule: GraphModule) -> List[Node]:
    """Placeholders of ``submodule`` from which upstream cannot build a ``torch_tensorrt.Input``."""
    return [node for node in submodule.graph.nodes if node.op == "placeholder" and _metadata_problem(node) is not None]


def repair_submodule_inputs(submodule: GraphModule, parent: Optional[GraphModule] = None) -> List[str]:
    """Fix every placeholder reported by :func:`boundary_problems`; describe what was done.

    ``parent`` defaults to the graph remembered by :func:`remember_partition`. All placeholders
    are analysed before anything is modified, so a :class:`PartitionInputError` leaves both
    graphs as they were.
    """
    problems = boundary_problems(submodule)
    if not problems:
        return []
    remembered = _PARENTS.get(submodule)
    torch_executed = remembered.torch_executed if remembered is not None else frozenset()
    if parent is None:
        found = partition_parent(submodule)
        parent, calls = found if found is not None else (None, [])
    else:
        calls = _calls_of(parent, submodule)
    if parent is None or not calls:
        raise _orphan_error(problems[0])

    planner = _Planner(parent, submodule, calls, torch_executed)
    plans = [planner.plan(node) for node in problems]

    repairs = []
    parent_changed = False
    for plan in plans:
        if plan.indices is None:
            repairs.append(_apply_tensor(plan))
        else:
            repairs.append(_apply_hoist(parent, submodule, plan))
            parent_changed = True
    if parent_changed:
        for gm in (submodule, parent):
            gm.graph.lint()
            gm.recompile()
    return repairs


# ---------------------------------------------------------------------------------------------
# Metadata inspection


def _metadata_problem(node: Node) -> Optional[str]:
    """Why upstream would reject ``node``'s metadata, mirroring its checks; None if it would not."""
    meta = node.meta
    if not meta:
        return "has no metadata"
    if "val" in meta:
        val = meta["val"]
        if isinstance(val, (tuple, list)):
            return f"has a {type(val).__name__} meta['val']"
        if val is None:
            return "has meta['val'] = None"
        return None
    if "tensor_meta" not in meta:
        return "has neither meta['val'] nor meta['tensor_meta']"
    # TensorMetadata is itself a NamedTuple, so test for it before testing for plain tuples.
    if not isinstance(meta["tensor_meta"], TensorMetadata):
        return f"has a {type(meta['tensor_meta']).__name__} meta['tensor_meta']"
    return None


def _is_tensor_type(jit_type: Any) -> bool:
    if isinstance(jit_type, torch._C.OptionalType):
        jit_type = jit_type.getElementType()
    return isinstance(jit_type, torch._C.TensorType)


def _matches_type(value: Any, jit_type: Any) -> bool:
    """Whether ``value`` has the structure a schema type promises (Tensor vs. list vs. scalar)."""
    if isinstance(jit_type, torch._C.TensorType):
        return isinstance(value, torch.Tensor)
    if isinstance(jit_type, torch._C.OptionalType):
        return value is None or _matches_type(value, jit_type.getElementType())
    if isinstance(jit_type, torch._C.ListType):
        return isinstance(value, (list, tuple)) and all(_matches_type(v, jit_type.getElementType()) for v in value)
    return not isinstance(value, (list, tuple, torch.Tensor))


def _fits_schema(op: torch._ops.OpOverload, value: Any) -> bool:
    returns = op._schema.returns
    if not returns:
        return value is None
    if len(returns) == 1:
        return _matches_type(value, returns[0].type)
    return (
        isinstance(value, (tuple, list))
        and len(value) == len(returns)
        and all(_matches_type(v, r.type) for v, r in zip(value, returns))
    )


def _consumed_as_tensor(user: Node, node: Node) -> bool:
    """Whether ``user`` takes ``node`` where a single Tensor is expected."""
    if user.op == "call_method":
        return user.args[0] is node
    if user.op != "call_function" or not isinstance(user.target, torch._ops.OpOverload):
        return False
    arguments = user.target._schema.arguments
    by_name = {a.name: a for a in arguments}
    slots = [arguments[i].type for i, a in enumerate(user.args) if a is node and i < len(arguments)]
    slots += [by_name[k].type for k, a in user.kwargs.items() if a is node and k in by_name]
    # A node nested in a list argument (e.g. cat's Tensor[]) is not counted, so no slots then.
    return bool(slots) and all(_is_tensor_type(t) for t in slots)


# ---------------------------------------------------------------------------------------------
# Graph helpers


def _submodule(gm: torch.nn.Module, target: str) -> Optional[torch.nn.Module]:
    try:
        return gm.get_submodule(target)
    except AttributeError:
        return None


def _calls_submodule(parent: GraphModule, node: Optional[Node], submodule: torch.nn.Module) -> bool:
    # Compared by identity: two targets may name the same module.
    return (
        node is not None
        and not node._erased
        and node.graph is parent.graph
        and node.op == "call_module"
        and _submodule(parent, node.target) is submodule
    )


def _calls_of(parent: GraphModule, submodule: torch.nn.Module) -> List[Node]:
    # A module may be called more than once.
    return [node for node in parent.graph.nodes if _calls_submodule(parent, node, submodule)]


def _placeholders(gm: GraphModule) -> List[Node]:
    return [node for node in gm.graph.nodes if node.op == "placeholder"]


def _output_node(gm: GraphModule) -> Node:
    for node in reversed(gm.graph.nodes):
        if node.op == "output":
            return node
    raise _Unrecoverable(f"graph of {type(gm).__name__} has no output node")


def _bound_argument(call: Node, position: int, placeholder: Node) -> Any:
    """What ``call`` passes for the ``position``-th placeholder: positional first, then by name."""
    if position < len(call.args):
        return call.args[position]
    if placeholder.target in call.kwargs:
        return call.kwargs[placeholder.target]
    if placeholder.args:
        return placeholder.args[0]
    raise _Unrecoverable(f"'{call.name}' does not pass input '{placeholder.target}'")


def _origin(parent: GraphModule, node: Node) -> Tuple[Node, Optional[str]]:
    """The node that actually computes ``node``'s value, looking through submodule calls.

    Partitioners route values between submodules through call_module (and getitem) nodes, which
    say nothing about the op that made the value; error messages should name that op.
    """
    gm, owner, index = parent, None, None
    while True:
        if (
            node.op == "call_function"
            and node.target is operator.getitem
            and isinstance(node.args[0], Node)
            and node.args[0].op == "call_module"
            and isinstance(node.args[1], int)
        ):
            node, index = node.args[0], node.args[1]
            continue
        sub = _submodule(gm, node.target) if node.op == "call_module" else None
        if not isinstance(sub, GraphModule):
            return node, owner
        result = _output_node(sub).args[0]
        if index is not None:
            if not isinstance(result, (tuple, list)):
                return node, owner
            result, index = result[index], None
        if not isinstance(result, Node):
            return node, owner
        owner = node.target if owner is None else f"{owner}.{node.target}"
        gm, node = sub, result


def _describe_producer(parent: GraphModule, node: Node) -> Tuple[str, str]:
    """Human-readable description of the producer of ``node`` and the name of its op."""
    inner, owner = _origin(parent, node)
    op = op_name(inner)
    text = f"node '{inner.name}' ({op})"
    if owner is not None:
        text += f" inside submodule '{owner}', reaching the parent graph as '{node.name}'"
    return text, op


def _layout(t: torch.Tensor) -> Tuple[Any, ...]:
    # Symbolic sizes compare by expression text so that comparing them adds no shape guards.
    return tuple(map(str, t.shape)), tuple(map(str, t.stride())), t.dtype, t.device


def _with_val(meta: Dict[str, Any], value: torch.Tensor) -> Dict[str, Any]:
    """A new metadata dict describing ``value``; the old dict may be shared with other nodes."""
    fresh = dict(meta)
    fresh["val"] = value
    if "tensor_meta" in fresh:
        fresh["tensor_meta"] = _extract_tensor_metadata(value)
    return fresh


# ---------------------------------------------------------------------------------------------
# Recomputing true values on fake tensors


def _fake_mode(*modules: GraphModule) -> FakeTensorMode:
    """The fake mode the graphs' metadata was traced with, so symbolic sizes stay comparable.

    All of a graph's fake values share one mode, so the first one found decides; stopping there
    keeps this independent of the size of the parent graph, which it is called on once per block.
    """
    for gm in modules:
        for node in gm.graph.nodes:
            for leaf in tree_leaves(node.meta.get("val")):
                if isinstance(leaf, FakeTensor):
                    return detect_fake_mode([leaf])
    return detect_fake_mode() or FakeTensorMode()


def _believable(node: Node) -> bool:
    """Whether ``node``'s recorded ``meta['val']`` is consistent with what the node returns."""
    if node.op == "call_module" or node.meta.get("val") is None:
        return False
    val = node.meta["val"]
    if node.op == "call_function":
        target = node.target
        if isinstance(target, torch._ops.OpOverload) and not _fits_schema(target, val):
            return False
        return not (target is operator.getitem and isinstance(val, (tuple, list)))
    return not isinstance(val, (tuple, list))


class _FakeEvaluator:
    """Lazily computes the runtime value of nodes of one graph as fake tensors.

    A node's ``meta['val']`` is used as is when it is consistent with what the node returns
    (checked against the op schema where there is one); otherwise the node is re-run on its
    inputs' values, which are obtained the same way. Submodule calls are always re-run, because
    partitioners either leave call_module nodes without metadata or copy the (possibly stale)
    metadata of the submodule's output onto them; a submodule input whose placeholder has a
    believable value of its own is not recomputed from the parent (else repairing the k-th block
    of a chain of blocks would re-run all k-1 blocks before it).
    """

    def __init__(self, gm: GraphModule, mode: FakeTensorMode, seeds: Optional[Dict[Node, Any]] = None) -> None:
        self.gm = gm
        self.mode = mode
        self.values: Dict[Node, Any] = dict(seeds or {})

    def value(self, node: Node) -> Any:
        # Iterative depth-first walk: chains of stale nodes can be longer than Python's
        # recursion limit.
        stack = [node]
        while stack:
            current = stack[-1]
            if current in self.values:
                stack.pop()
                continue
            trusted = self._trusted_value(current)
            if trusted is not None:
                self.values[current] = trusted
                stack.pop()
                continue
            pending = [n for n in self._needed_inputs(current) if n not in self.values]
            if pending:
                stack.extend(pending)
                continue
            self.values[current] = self._run(current)
            stack.pop()
        return self.values[node]

    def _to_fake(self, value: Any) -> Any:
        def convert(leaf: Any) -> Any:
            if isinstance(leaf, torch.Tensor) and not isinstance(leaf, FakeTensor):
                return self.mode.from_tensor(leaf, static_shapes=True)
            return leaf

        return tree_map(convert, value)

    def _trusted_value(self, node: Node) -> Any:
        """The node's recorded value if it can be believed, else None."""
        return self._to_fake(node.meta["val"]) if _believable(node) else None

    def _needed_inputs(self, node: Node) -> List[Node]:
        """The nodes whose values running ``node`` takes from this graph."""
        sub = _submodule(self.gm, node.target) if node.op == "call_module" else None
        if not isinstance(sub, GraphModule):
            return node.all_input_nodes
        needed: List[Node] = []
        for _placeholder, arg in self._seeded_inputs(node, sub):
            map_arg(arg, needed.append)
        return needed

    def _seeded_inputs(self, node: Node, sub: GraphModule) -> List[Tuple[Node, Any]]:
        """(placeholder, argument) of each input of a submodule call whose value must come from here."""
        return [
            (placeholder, _bound_argument(node, position, placeholder))
            for position, placeholder in enumerate(_placeholders(sub))
            if not _believable(placeholder)
        ]

    def _run(self, node: Node) -> Any:
        if node.op == "placeholder":
            raise _Unrecoverable(f"graph input '{node.name}' of the parent graph has no usable meta['val']")
        if node.op == "get_attr":
            owner, _, name = node.target.rpartition(".")
            return self._to_fake(getattr(self.gm.get_submodule(owner), name))
        if node.op == "call_module":
            return self._run_submodule(node)
        args = map_arg(node.args, self.values.__getitem__)
        kwargs = map_arg(node.kwargs, self.values.__getitem__)
        try:
            with running_on_fake(self.mode):
                if node.op == "call_method":
                    return getattr(args[0], node.target)(*args[1:], **kwargs)
                return node.target(*args, **kwargs)
        except Exception as e:
            raise _Unrecoverable(
                f"re-running '{node.name}' ({op_name(node)}) on fake inputs failed: {type(e).__name__}: {e}"
            ) from e

    def _run_submodule(self, node: Node) -> Any:
        sub = _submodule(self.gm, node.target)
        if not isinstance(sub, GraphModule):
            raise _Unrecoverable(
                f"'{node.name}' calls {type(sub).__name__} '{node.target}', which is not an "
                "fx GraphModule and cannot be re-run on fake inputs"
            )
        # Placeholders left unseeded answer with their own (believable) meta['val'].
        seeds = {
            placeholder: map_arg(arg, self.values.__getitem__) for placeholder, arg in self._seeded_inputs(node, sub)
        }
        inner = _FakeEvaluator(sub, self.mode, seeds)
        return map_arg(_output_node(sub).args[0], inner.value)


# ---------------------------------------------------------------------------------------------
# Planning and applying repairs


@dataclasses.dataclass
class _Plan:
    placeholder: Node
    problem: str
    submodule_name: str
    producer_text: str
    # One (call node, producer node, true value) per call of the submodule.
    bindings: List[Tuple[Node, Node, Any]]
    # None for a single-tensor input; the used tuple indices when the tuple is hoisted.
    indices: Optional[List[int]] = None


def _orphan_error(placeholder: Node) -> PartitionInputError:
    problem = _metadata_problem(placeholder)
    users = list(placeholder.users)
    consumers = ", ".join(sorted({op_name(u) for u in users})) or "no node"
    val = placeholder.meta.get("val")
    stale = users and all(_consumed_as_tensor(u, placeholder) for u in users)
    if isinstance(val, (tuple, list)) and stale:
        return PartitionInputError(
            f"Submodule input '{placeholder.name}' {problem}, but every user inside the submodule "
            f"({consumers}) consumes it as a single Tensor: the metadata is stale (copied from a "
            "node a lowering pass replaced) and could not be recomputed without the parent graph, "
            "which was not recorded for this submodule. " + _remedy("the op producing it")
        )
    return PartitionInputError(
        f"Submodule input '{placeholder.name}' {problem} (used by {consumers}); its producer is "
        "unknown because no parent graph was recorded for this submodule, so the value that "
        "really flows there cannot be determined. " + _remedy("the op producing it")
    )


def _getitem_indices(placeholder: Node, length: int) -> Optional[List[int]]:
    """Sorted tuple indices used, if every user is ``getitem(placeholder, constant)``."""
    indices = set()
    for user in placeholder.users:
        if (
            user.op != "call_function"
            or user.target is not operator.getitem
            or user.kwargs
            or user.args[0] is not placeholder
            or not isinstance(user.args[1], int)
            or not -length <= user.args[1] < length
        ):
            return None
        indices.add(user.args[1] % length)
    return sorted(indices)


class _Planner:
    """Decides how to repair the bad inputs of one submodule; raises PartitionInputError naming the node, the
    op producing it and the remedy when an input cannot become a TensorRT input."""

    def __init__(
        self, parent: GraphModule, submodule: GraphModule, calls: List[Node], torch_executed: FrozenSet[str]
    ) -> None:
        self.parent, self.submodule, self.calls, self.torch_executed = parent, submodule, calls, torch_executed
        self.evaluator = _FakeEvaluator(parent, _fake_mode(parent, submodule))

    def plan(self, placeholder: Node) -> _Plan:
        problem = _metadata_problem(placeholder)
        where = f"Input '{placeholder.name}' of submodule '{self.calls[0].target}' {problem}"
        bindings = self._bindings(placeholder, where)
        text, op = _describe_producer(self.parent, bindings[0][1])
        plan = _Plan(placeholder, problem, self.calls[0].target, text, bindings)
        values = [value for _, _, value in bindings]
        if all(isinstance(v, torch.Tensor) for v in values):
            self._require_one_layout(
                values,
                f"{where}. Its {len(values)} calls pass tensors of different shapes or "
                f"strides ({'; '.join(describe_value(v) for v in values)})",
                op,
            )
            return plan
        plan.indices = self._tuple_elements(placeholder, values, where, text, op)
        return plan

    def _fail(self, message: str, op: str) -> PartitionInputError:
        return PartitionInputError(f"{message} {_remedy(op, self.torch_executed)}")

    def _bindings(self, placeholder: Node, where: str) -> List[Tuple[Node, Node, Any]]:
        """(call, producer, true value) for every call of the submodule."""
        position = _placeholders(self.submodule).index(placeholder)
        bindings = []
        for call in self.calls:
            try:
                producer = _bound_argument(call, position, placeholder)
            except _Unrecoverable as e:
                raise PartitionInputError(f"{where}, and {e}.") from None
            if not isinstance(producer, Node):
                raise PartitionInputError(
                    f"{where}; '{call.name}' passes the constant {producer!r} for it, which is not a tensor."
                )
            try:
                bindings.append((call, producer, self.evaluator.value(producer)))
            except _Unrecoverable as e:
                text, op = _describe_producer(self.parent, producer)
                raise self._fail(
                    f"{where}. It is produced by {text}, whose runtime value could not be recomputed: {e}.", op
                ) from None
        return bindings

    def _require_one_layout(self, tensors: List[Any], problem: str, op: str) -> None:
        if len({_layout(t) for t in tensors}) > 1:
            raise self._fail(f"{problem}, which one TensorRT input cannot describe.", op)

    def _tuple_elements(self, placeholder: Node, values: List[Any], where: str, text: str, op: str) -> List[int]:
        """The tuple indices to hoist into the parent, when a real tuple crosses the boundary."""
        if not all(isinstance(v, (tuple, list)) for v in values) or len({len(v) for v in values}) > 1:
            raise self._fail(
                f"{where}. It is produced by {text}, which yields "
                f"{' / '.join(describe_value(v) for v in values)} at runtime; TensorRT inputs must "
                "be tensors.",
                op,
            )
        indices = _getitem_indices(placeholder, len(values[0]))
        if indices is None:
            consumers = ", ".join(sorted({op_name(u) for u in placeholder.users}))
            raise self._fail(
                f"{where}. It is produced by {text} as a {describe_value(values[0])}, and the "
                f"submodule consumes the whole {type(values[0]).__name__} ({consumers}) instead of "
                "indexing it with constant getitems, so it cannot be split into tensor inputs.",
                op,
            )
        for i in indices:
            elements = [v[i] for v in values]
            if not all(isinstance(e, torch.Tensor) for e in elements):
                raise self._fail(
                    f"{where}. It is produced by {text}; element {i} of its value is "
                    f"{describe_value(elements[0])}, not a tensor, so it cannot become a TensorRT "
                    "input.",
                    op,
                )
            self._require_one_layout(
                elements, f"{where}. Element {i} has different shapes or strides across its {len(values)} calls", op
            )
        return indices


def _apply_tensor(plan: _Plan) -> str:
    """Stale or lost metadata of a single-tensor input: describe the tensor that really flows."""
    value = plan.bindings[0][2]
    plan.placeholder.meta = _with_val(plan.placeholder.meta, value)
    for _, producer, produced in plan.bindings:
        current = producer.meta.get("val")
        if not (isinstance(current, torch.Tensor) and _layout(current) == _layout(produced)):
            producer.meta = _with_val(producer.meta, produced)
    return (
        f"{plan.submodule_name}: input '{plan.placeholder.name}' {plan.problem}; set its "
        f"meta['val'] to {describe_value(value)}, as produced at runtime by {plan.producer_text}"
    )


def _fresh_name(base: str, taken: set) -> str:
    name, suffix = base, 0
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    taken.add(name)
    return name


def _apply_hoist(parent: GraphModule, submodule: GraphModule, plan: _Plan) -> str:
    """A real tuple crosses the boundary: index it in the parent and pass only the elements."""
    old = plan.placeholder
    graph = submodule.graph
    position = _placeholders(submodule).index(old)
    taken = {node.name for node in graph.nodes} | {node.target for node in graph.nodes if node.op == "placeholder"}
    users_by_index: Dict[int, List[Node]] = {}
    for user in old.users:
        users_by_index.setdefault(user.args[1] % len(plan.bindings[0][2]), []).append(user)

    new_placeholders = []
    with graph.inserting_before(old):
        for index in plan.indices:
            users = users_by_index[index]
            new = graph.placeholder(_fresh_name(f"{old.name}_{index}", taken))
            # The getitem being replaced carries the element's stack trace and tensor_meta.
            new.meta = _with_val(users[0].meta, plan.bindings[0][2][index])
            for user in users:
                user.replace_all_uses_with(new)
                graph.erase_node(user)
            new_placeholders.append(new)
    graph.erase_node(old)

    hoisted = []
    for call, producer, value in plan.bindings:
        with parent.graph.inserting_before(call):
            items = []
            for index in plan.indices:
                item = parent.graph.call_function(operator.getitem, (producer, index))
                item.meta = {"val": value[index]}
                items.append(item)
        if position < len(call.args):
            call.args = call.args[:position] + tuple(items) + call.args[position + 1 :]
        else:
            kwargs = {k: v for k, v in call.kwargs.items() if k != old.target}
            kwargs.update((p.target, item) for p, item in zip(new_placeholders, items))
            call.kwargs = kwargs
        hoisted.extend(item.name for item in items)

    return (
        f"{plan.submodule_name}: input '{old.name}' {plan.problem} and receives a real "
        f"tuple from {plan.producer_text}; moved its elements {plan.indices} into the parent "
        f"({', '.join(hoisted)}) and replaced it with inputs "
        f"{', '.join(p.name for p in new_placeholders)}"
    )


# ---------------------------------------------------------------------------------------------
# Reproducers (trt_compat verify, the compatibility matrix)


class ConvCeilPool(torch.nn.Module):
    """#3185's model: ceil_mode max pooling between two convolutions, the pool kept in PyTorch so that its
    output is an input of the TensorRT block after it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (1, 3, 16, 16)
        return torch.relu(self.conv2(self.pool(self.conv1(x))))


POOL_IN_TORCH = ("torch.ops.aten.max_pool2d.default",)


def make_pool_meta_stale(gm: GraphModule, *_release_specific: Any) -> GraphModule:
    """A lowering pass leaving what 2.2-2.4's max-pool fusion leaves: each max_pool2d node's val becomes the
    ``(values, indices)`` tuple of the op it replaced."""
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.max_pool2d.default:
            values = node.meta.get("val")
            if isinstance(values, torch.Tensor):
                node.meta["val"] = (values, values.new_empty(values.shape, dtype=torch.int64))
    return gm


def _ceil_pool_boundary(probe: Probe, lower: Callable[[Any, Any], GraphModule]) -> Optional[str]:
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    partitioned = probe.partition(lower(ConvCeilPool().eval(), x), torch_executed_ops=POOL_IN_TORCH)
    return probe.block_input_problem(partitioned, x)


def check_ceil_pool_boundary(probe: Probe) -> Optional[str]:
    return _ceil_pool_boundary(probe, probe.export_and_lower)


def check_stale_pass_meta(probe: Probe) -> Optional[str]:
    """The same model, with a user lowering pass (registered the documented way) leaving a stale tuple val."""
    from torch_tensorrt.dynamo.lowering.passes import _aten_lowering_pass as registry

    registry._aten_lowering_pass(make_pool_meta_stale)
    try:
        lowered = probe.export_and_lower(ConvCeilPool().eval(), torch.randn(1, 3, 16, 16))
    finally:
        manager = next(
            getattr(registry, name)
            for name in ("ATEN_POST_LOWERING_PASSES", "ATEN_LOWERING_PASSES")
            if hasattr(registry, name)
        )
        registry._remove_lowering_pass(index=next(i for i, p in enumerate(manager.passes) if p is make_pool_meta_stale))
    return _ceil_pool_boundary(probe, lambda model, x: lowered)


def demonstrate(say: Callable[[str], None]) -> list:
    """``trt-compat demo``: the embedded model's ceil-mode pool ends a PyTorch block, with the stale val upstream's
    fusion leaves on it (2.2-2.4); the next block's input is repaired from the tensor that really flows there."""
    from torch.fx.passes.split_module import split_module

    from trt_compat.demo import WITH, WITHOUT, Check, example_input, exported_graph, identical, single_output_pool

    say(
        "upstream: the max-pool fusion of 2.2-2.4 leaves the fused max_pool2d with the (values, indices) val of the "
        "node it replaced; when that pool ends a PyTorch block, the next TensorRT block's input is described by that "
        "tuple and construct_submodule_inputs aborts (#3185)."
    )
    stale = exported_graph()
    pool = single_output_pool(stale)
    make_pool_meta_stale(stale)
    after_pool, ends_first_block = {}, False
    for node in stale.graph.nodes:
        after_pool[node] = 1 if ends_first_block else 0
        ends_first_block = ends_first_block or node is pool
    parent = split_module(stale, None, lambda node: after_pool[node])
    remember_partition(parent)
    block = parent.submod_1
    rejected = boundary_problems(block)
    names = ", ".join(f"{p.name} (meta['val'] is a {type(p.meta['val']).__name__})" for p in rejected) or "none"
    say(f"without trt_compat (the stale val upstream's fusion leaves, reproduced): block inputs rejected: {names}")
    for note in repair_submodule_inputs(block):
        say(f"with trt_compat: {note}")
    flowing = {}
    handle = block.register_forward_pre_hook(lambda _module, args: flowing.setdefault("args", args))
    outputs = parent(example_input())
    handle.remove()
    same = identical(outputs, exported_graph()(example_input()))
    exact = all(
        isinstance(p.meta.get("val"), torch.Tensor)
        and p.meta["val"].shape == t.shape
        and p.meta["val"].dtype == t.dtype
        for p, t in zip(_placeholders(block), flowing["args"])
    )
    say(
        f"every block input now describes the tensor that really flows into it: {exact}; the partitioned graph's "
        f"outputs bit-identical to eager: {same}"
    )
    return [
        Check(PATCH.name, WITHOUT, "a block input upstream would reject", bool(rejected), names),
        Check(PATCH.name, WITH, "inputs describe the flowing tensors", exact),
        Check(PATCH.name, WITH, "outputs bit-identical to eager", same),
        Check(PATCH.name, WITH, "nothing left to reject", not boundary_problems(block)),
    ]


PATCH = Patch(
    name="tuple_partition_inputs",
    title="partition inputs are built from the tensor that really crosses the boundary",
    issue="https://github.com/pytorch/TensorRT/issues/3185",
    # 2.2.0 has no construct_submodule_inputs: it finds block inputs by running the module on sample inputs
    # (partitioning.get_submod_inputs), so no metadata reaches them (measured by the compatibility matrix).
    first_affected="2.3.0",
    fixed_in=None,
    why=(
        "construct_submodule_inputs aborts on a placeholder whose meta['val'] is a tuple or whose metadata is "
        "missing. On 2.3-2.4 upstream's own max-pool fusion leaves such metadata. From 2.5.0 neither reproducer "
        "finds the defect (the fusion no longer leaves a tuple), but the check is unchanged up to the newest "
        "release and other passes still reach it (2.5.0: a block input made by .item() without metadata), so the "
        "patch stays as a guard there: it changes only placeholders upstream would reject, and logs each repair."
    ),
    defects=(
        Defect(
            "ceil_pool_boundary",
            "#3185 fused max_pool2d after a ceil_mode pool carries a tuple (or no) val into construct_submodule_inputs",
            check_ceil_pool_boundary,
        ),
        Defect(
            "stale_pass_meta",
            "#3185 a stale tuple val left by a registered lowering pass reaches construct_submodule_inputs",
            check_stale_pass_meta,
        ),
    ),
)


def _remember_parent(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    result = wrapped(*args, **kwargs)
    executed = inspect.signature(wrapped).bind_partial(*args, **kwargs).arguments.get("torch_executed_ops")
    remember_partition(result[0] if isinstance(result, tuple) else result, executed or ())
    return result


def _repair_then_construct(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    submodule = args[0] if args else kwargs["module"]
    for note in repair_submodule_inputs(submodule):
        logger.info("trt_compat: %s", note)
    return wrapped(*args, **kwargs)


def apply(ctx: PatchContext) -> None:
    partitioning = ctx.import_module("torch_tensorrt.dynamo.partitioning")
    construct = ctx.require_attr(partitioning, "construct_submodule_inputs", callable)
    if "module" not in inspect.signature(construct).parameters:
        raise TargetChanged("construct_submodule_inputs no longer takes `module`")
    for name in ("fast_partition", "global_partition"):
        if callable(getattr(partitioning, name, None)):
            ctx.wrap_function(partitioning, name, _remember_parent)
    ctx.wrap_function(partitioning, "construct_submodule_inputs", _repair_then_construct)

"""Keep in-place updates of graph inputs and buffers in the ``torch.compile`` backend.

Not reported upstream yet. Before AOT tracing, ``backends._pretraced_backend`` calls ``repair_input_aliasing``,
which puts an ``aten.clone`` after every tensor placeholder of the Dynamo graph and makes every user read the
clone (``aot_export_joint_simple``, which the backend traces with, does not support input mutations). Every
in-place op on an input then writes into the clone, functionalisation turns it into an out-of-place op, and
the caller's tensor is never written. From torch 2.5 Dynamo passes a module's buffers as graph inputs too, so
they are cloned as well. Measured with ``options={"dryrun": True}`` on the CPU, compared with eager after each
of three calls, on 2.3.0, 2.4.0, 2.5.0, 2.6.0, 2.6.1, 2.7.0, 2.8.0, 2.9.0, 2.11.0, 2.12.0, 2.12.1, 2.13.0 and 2.14.0
(2.2.0, which has no dryrun, up to partitioning; 2.10.0's dryrun cannot finish a graph with a single output):

* ``x.add_(1); return x * 2`` (and ``copy_``, slice assignment, writes through a view or a transpose,
  ``relu(x, inplace=True)``, ``out=x``): the caller's ``x`` is never updated, and outputs after the first call
  are wrong;
* ``self.count.add_(1); return x * self.count`` and a KV-cache write ``self.cache[pos] = x`` (or ``index_put_``,
  ``copy_`` into a buffer): from 2.5.0 the buffer never changes and the outputs go wrong; on 2.2.0-2.4.0
  (torch 2.2-2.4 read buffers with ``get_attr`` nodes) AOT tracing fails on the update instead, so the graph
  runs in PyTorch (or, with ``pass_through_build_failures``, does not compile);
* ``BatchNorm`` in training mode: from 2.5.0 the running statistics never change.

Nothing warns. The graph the backend falls back to when conversion fails already has the clones, so it loses
the updates too.

This module finds the inputs and buffers a Dynamo graph writes by running the graph once on fresh fake tensors
and watching which ops write into their storage, as their schemas declare (so writes through views, ``out=``
and ``batch_norm``'s running statistics count). It then makes the graph return the final value of each of
them as extra outputs, lets Torch-TensorRT compile that graph unchanged, and copies the extra outputs back into
the caller's tensors after every call, as AOT Autograd does for the other backends. Buffers torch 2.2-2.4 read
with ``get_attr`` nodes become extra graph inputs first, so they are traced like inputs (and compile, where
upstream's trace fails on them). A graph that writes nothing
gets exactly upstream's compiled module, at no cost per call. What cannot be kept is refused at compile time
with an :class:`InputMutationError` naming the node, the input and the remedy:

* a change of an input's shape, strides or storage (``t_``, ``resize_``, ``set_``; Dynamo runs these outside
  the graph, so only hand-made graphs reach the backend with them);
* an updated input that shares memory with another input of the same call: the compiled graph reads each
  input as a separate tensor, so eager's reads of the write through the other input cannot be reproduced.
  Dynamo does not guard on this, so a graph compiled for separate tensors and later called with overlapping
  ones computes as if they were separate -- exactly what torch.compile's own AOT Autograd backends do
  (measured on torch 2.4.1 and 2.14.1 with ``backend="aot_eager"``).

Only the Dynamo graph's own inputs and ``get_attr`` tensors are watched: on torch 2.2-2.4 a built-in module kept
as a ``call_module`` node (e.g. ``BatchNorm`` in training mode) updates its buffers inside the submodule, and
upstream's AOT tracing fails on that loudly, as without trt_compat. Outputs keep their values but not their
identity: eager returns a view of an updated input where the compiled graph returns a new tensor, as upstream
does for every output.

Not changed here: with ``options={"use_distributed_mode_trace": True}`` (2.7 and newer) the backend traces through
AOT Autograd, which keeps the updates itself; its forward graphs write nothing, so they pass through untouched.
The export path (``torch_tensorrt.dynamo.compile``) is a different pipeline (its own losses are measured in
tests/integration/test_keep_input_mutations.py).

The functions below work on plain ``torch.fx`` graphs; ``apply`` wraps the module global ``_pretraced_backend``
that ``aot_torch_tensorrt_aten_backend`` calls.
"""

import contextlib
import inspect
import itertools
import logging
import operator
import unittest.mock
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.fx import GraphModule, Node
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from trt_compat._fake import running_on_fake
from trt_compat.patching import Defect, Patch, PatchContext, TargetChanged

logger = logging.getLogger("trt_compat")

_BACKENDS_MODULE = "torch_tensorrt.dynamo.backend.backends"

# Remedies that always exist; each error names its own first.
_ALTERNATIVES = (
    'on Torch-TensorRT 2.7 or newer pass options={"use_distributed_mode_trace": True}, which traces through '
    "AOT Autograd, itself keeping updates of inputs, or compile this function with another backend (e.g. "
    'backend="inductor"), or set TRT_COMPAT_DISABLE=keep_input_mutations to get upstream\'s behaviour (the update '
    "is then lost)"
)


class InputMutationError(ValueError):
    """A graph updates an input or buffer in a way the compiled graph cannot reproduce; raised at compile time."""


@dataclass(frozen=True)
class Mutation:
    """A graph input or ``get_attr`` tensor that the graph writes, with the first node writing it."""

    target: Node
    """The placeholder, or the first ``get_attr`` node of the attribute."""
    position: Optional[int]
    """Index of the placeholder among the graph's placeholders (its argument position); None for a get_attr."""
    writer: Node
    op: str
    """The ATen op (or higher-order op) through which ``writer`` writes it, e.g. ``aten.add_.Tensor``."""
    layout_changed: bool
    """Its shape, strides, offset or storage changed (``t_``, ``resize_``, ``set_``), not only its values."""


@dataclass(frozen=True)
class WriteBack:
    """How the rewritten graph hands back updated tensors: the plan :func:`write_back` executes after each call."""

    user_outputs: int
    """Outputs of the original graph; the updated values follow them."""
    input_positions: Tuple[int, ...]
    """Argument positions of the updated inputs, in the order of their extra outputs."""
    attributes: Tuple[torch.Tensor, ...]
    """Tensors that were ``get_attr`` nodes: passed as extra trailing arguments, updated after the inputs."""


# ---------------------------------------------------------------------------------------------------------------
# Finding the writes


def _storage_of(t: torch.Tensor) -> Optional[StorageWeakRef]:
    """The tensor's storage, or None for a tensor without one (a wrapper subclass, a sparse tensor)."""
    try:
        return StorageWeakRef(t.untyped_storage())
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _layout(t: torch.Tensor) -> Tuple[Any, ...]:
    # Symbolic sizes compare by text, so that comparing them adds no guards to Dynamo's shape environment.
    return (
        tuple(map(str, t.shape)),
        tuple(map(str, t.stride())),
        str(t.storage_offset()),
        StorageWeakRef(t.untyped_storage()),
    )


def _written_slots(op: Any, cache: Dict[Any, Tuple[Tuple[int, str], ...]]) -> Tuple[Tuple[int, str], ...]:
    """(position, name) of every argument ``op``'s schema declares as written (``Tensor(a!)``)."""
    slots = cache.get(op)
    if slots is None:
        schema = getattr(op, "_schema", None)
        arguments = schema.arguments if schema is not None else ()
        slots = cache[op] = tuple(
            (index, argument.name)
            for index, argument in enumerate(arguments)
            if argument.alias_info is not None and argument.alias_info.is_write
        )
    return slots


class _WriteRecorder(TorchDispatchMode):
    """Sees every ATen op run on the fake tensors and notes those writing into a watched tensor's storage."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: Dict[StorageWeakRef, Node] = {}
        self.node: Optional[Node] = None
        self.writes: List[Tuple[Node, Node, str]] = []  # (watched target, writing node, op)
        self._slots: Dict[Any, Tuple[Tuple[int, str], ...]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        for index, name in _written_slots(func, self._slots):
            value = args[index] if index < len(args) else kwargs.get(name)
            for tensor in tree_flatten(value)[0]:
                if isinstance(tensor, torch.Tensor):
                    target = self.watched.get(_storage_of(tensor))
                    if target is not None:
                        self.writes.append((target, self.node, str(func)))
        return func(*args, **kwargs)


class _FakeRun(torch.fx.Interpreter):
    """Runs a graph on fake tensors, recording which watched tensors each node writes.

    ``get_attr`` tensors are replaced by fresh fake tensors (one per attribute) so that nothing real is touched.
    Higher-order ops cannot run under an extra dispatch mode on every release, so they run without the recorder
    and are checked by the version counters and layouts of the watched tensors around them.
    """

    def __init__(self, gm: GraphModule):
        super().__init__(gm)
        self.recorder = _WriteRecorder()
        self.fakes: Dict[Node, torch.Tensor] = {}  # watched placeholder or first get_attr -> its fake tensor
        self.initial_layouts: Dict[Node, Tuple[Any, ...]] = {}
        self._attributes: Dict[str, torch.Tensor] = {}

    def watch(self, node: Node, value: torch.Tensor) -> torch.Tensor:
        fake = self.fakes[node] = _fresh_fake(value)
        self.initial_layouts[node] = _layout(fake)
        self.recorder.watched[StorageWeakRef(fake.untyped_storage())] = node
        return fake

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> Any:
        value = super().get_attr(target, args, kwargs)
        if not isinstance(value, torch.Tensor):
            return value
        if target not in self._attributes:
            self._attributes[target] = self.watch(self.recorder.node, value)
        return self._attributes[target]

    def run_node(self, n: Node) -> Any:
        self.recorder.node = n
        if n.op == "call_function" and isinstance(n.target, torch._ops.HigherOrderOperator):
            before = {node: (fake._version, _layout(fake)) for node, fake in self.fakes.items()}
            result = super().run_node(n)
            for node, fake in self.fakes.items():
                if before[node] != (fake._version, _layout(fake)):
                    self.recorder.writes.append((node, n, str(n.target)))
            return result
        with self.recorder:
            return super().run_node(n)


def _placeholders(gm: GraphModule) -> List[Node]:
    return [node for node in gm.graph.nodes if node.op == "placeholder"]


def _fake_mode_of(gm: GraphModule, sample_inputs: Sequence[Any]) -> Any:
    """The fake mode upstream traces the graph with, so symbolic sizes stay those of Dynamo's shape environment.

    That is the tracing context's (Dynamo hands the backend a fresh mode sharing the shape environment of the
    one its recorded values belong to), else that of fake inputs or recorded values, else a new one.
    """
    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    mode = detect_fake_mode(sample_inputs)
    if mode is None:
        recorded = [node.meta.get("example_value", node.meta.get("val")) for node in _placeholders(gm)]
        mode = detect_fake_mode([value for value in recorded if value is not None])
    return mode if mode is not None else FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv())


@contextlib.contextmanager
def _quiet_fake_run(mode: Any) -> Iterator[None]:
    """``mode`` with the Python dispatcher on, accepting real tensors, grad off, and Dynamo's shape env left as it was.

    The Python dispatcher matters: with it ``batch_norm`` in training mode reaches ``_native_batch_norm_legit``,
    whose schema declares the running statistics as written (``native_batch_norm``'s does not).
    """
    shape_env = getattr(mode, "shape_env", None)
    ignore_unbacked = getattr(shape_env, "ignore_fresh_unbacked_symbols", None)
    # Grad off: see _fresh_fake.
    with torch.no_grad(), unittest.mock.patch.object(mode, "allow_non_fake_inputs", True), running_on_fake(mode):
        # An .item() in the graph makes a fresh unbacked symbol; left pending, it would be blamed on the next trace.
        with ignore_unbacked() if ignore_unbacked is not None else contextlib.nullcontext():
            yield


def _fresh_fake(value: torch.Tensor) -> torch.Tensor:
    # A new tensor of the fake mode in force, never one of its memoised conversions, which upstream traces with.
    # Never requiring grad: which ops write is a matter of their schemas, not of autograd, whose checks (an
    # in-place op on a leaf) would only get in the way -- and Dynamo's recorded value of an input written with
    # a tensor that requires grad says requires_grad=True after tracing even when the input does not.
    return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=value.device)


def find_mutations(gm: GraphModule, sample_inputs: Sequence[Any]) -> List[Mutation]:
    """The inputs and ``get_attr`` tensors ``gm`` writes, in graph order; [] when none.

    Runs ``gm`` once on fresh fake tensors shaped like its inputs (the values Dynamo recorded, else
    ``sample_inputs``). A write is an ATen op whose schema marks an argument as written (in-place and ``out=``
    ops, the ``copy_`` of a ``setitem``, ``batch_norm``'s running statistics) when that argument shares storage
    with an input -- so writes through views count -- or, for a higher-order op, a change of the input's version
    counter. A change of shape, strides or storage is recorded as ``layout_changed``.
    """
    placeholders = _placeholders(gm)
    run = _FakeRun(gm)
    with _quiet_fake_run(_fake_mode_of(gm, sample_inputs)):
        arguments = []
        for position, node in enumerate(placeholders):
            sample = sample_inputs[position] if position < len(sample_inputs) else None
            value = node.meta.get("example_value", node.meta.get("val", sample))
            arguments.append(run.watch(node, value) if isinstance(value, torch.Tensor) else value)
        run.run(*arguments)

    first_write: Dict[Node, Tuple[Node, str]] = {}
    for target, writer, op in run.recorder.writes:
        first_write.setdefault(target, (writer, op))
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    return [
        Mutation(
            target,
            placeholders.index(target) if target.op == "placeholder" else None,
            writer,
            op,
            _layout(run.fakes[target]) != run.initial_layouts[target],
        )
        for target, (writer, op) in sorted(first_write.items(), key=lambda item: order[item[0]])
    ]


# ---------------------------------------------------------------------------------------------------------------
# Checking what can be kept


def describe_target(node: Node) -> str:
    """``graph input 'l_x_' (L['x'])`` or ``attribute 'L__self___count'``: what the user knows it as."""
    if node.op == "get_attr":
        return f"attribute '{node.target}'"
    grapharg = node.meta.get("grapharg")
    source = getattr(grapharg, "source", None)
    name = getattr(source, "name", None)
    name = name() if callable(name) else name
    return f"graph input '{node.target}'" + (f" ({name})" if name else "")


def _written_by(mutation: Mutation) -> str:
    return f"node '{mutation.writer.name}' ({mutation.op})"


def _real_values(gm: GraphModule, mutations: Sequence[Mutation], sample_inputs: Sequence[Any]) -> Dict[Node, Any]:
    """What each placeholder receives in this call, and each mutated attribute's tensor."""
    values: Dict[Node, Any] = dict(zip(_placeholders(gm), sample_inputs))
    values.update((m.target, _resolve(gm, m.target.target)) for m in mutations if m.target.op == "get_attr")
    return values


def check_mutations_keepable(mutations: Sequence[Mutation], gm: GraphModule, sample_inputs: Sequence[Any]) -> None:
    """Raise :class:`InputMutationError` for a write the compiled graph cannot reproduce (see module docstring)."""
    for mutation in mutations:
        if mutation.layout_changed:
            raise InputMutationError(
                f"{_written_by(mutation)} changes the shape, strides or storage of {describe_target(mutation.target)}"
                " in place. The Torch-TensorRT backend traces the graph functionally and its engines return new "
                "tensors, so only value updates of inputs can be copied back. Remedy: use the out-of-place op "
                "(x = x.t() instead of x.t_()) or change the input's shape outside the compiled function, or "
                + _ALTERNATIVES
                + "."
            )
    values = _real_values(gm, mutations, sample_inputs)
    holders: Dict[Optional[StorageWeakRef], List[Node]] = {}
    for node, value in values.items():
        if isinstance(value, torch.Tensor):
            holders.setdefault(_storage_of(value), []).append(node)
    for mutation in mutations:
        value = values.get(mutation.target)
        storage = _storage_of(value) if isinstance(value, torch.Tensor) else None
        if storage is None:
            continue
        sharing = [node for node in holders[storage] if node is not mutation.target]
        if sharing:
            others = ", ".join(describe_target(node) for node in sharing)
            raise InputMutationError(
                f"{_written_by(mutation)} updates {describe_target(mutation.target)} in place, and it shares memory "
                f"with {others} in this call. The compiled graph reads every input as a separate tensor, so reads "
                "through the other one would not see the update as they do in eager mode. Remedy: pass tensors "
                "that do not share memory (e.g. a .clone() of one of them), or " + _ALTERNATIVES + "."
            )


# ---------------------------------------------------------------------------------------------------------------
# Carrying the updated values out of the graph


def _resolve(gm: GraphModule, target: str) -> Any:
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def return_updated_inputs(gm: GraphModule, mutations: Sequence[Mutation]) -> Tuple[GraphModule, WriteBack]:
    """A copy of ``gm`` that also returns the final value of every mutated input and attribute, and the plan for
    :func:`write_back`.

    The graph's output tuple is extended by the mutated placeholders: in eager execution they are the updated
    tensors themselves; once Torch-TensorRT has inserted its clones and traced, they are the updated values.
    Each mutated ``get_attr`` tensor becomes a new placeholder after the existing ones (read by every
    ``get_attr`` node of that attribute), so it is traced and compiled like an input. ``gm`` itself is left as
    it is: Dynamo reads its placeholders again after compiling, to know what to pass.
    """
    graph = torch.fx.Graph()
    copies: Dict[Node, Node] = {}
    results = graph.graph_copy(gm.graph, copies)
    if not isinstance(results, (tuple, list)):
        raise InputMutationError(
            f"the graph returns {type(results).__name__} rather than a tuple of outputs (as Dynamo graphs do), so "
            "the updated inputs cannot be added to its outputs"
        )
    extra = [copies[m.target] for m in mutations if m.target.op == "placeholder"]
    positions = tuple(m.position for m in mutations if m.target.op == "placeholder")
    attributes = []
    last_input = [node for node in graph.nodes if node.op == "placeholder"][-1:]
    for mutation in (m for m in mutations if m.target.op == "get_attr"):
        target = mutation.target.target
        with graph.inserting_after(last_input[0]) if last_input else graph.inserting_before(None):
            placeholder = graph.placeholder(target.replace(".", "_"), type_expr=torch.Tensor)
        placeholder.meta = dict(mutation.target.meta)
        last_input = [placeholder]
        for reader in [node for node in graph.nodes if node.op == "get_attr" and node.target == target]:
            reader.replace_all_uses_with(placeholder)
            graph.erase_node(reader)
        attributes.append(_resolve(gm, target))
        extra.append(placeholder)
    graph.output(type(results)(itertools.chain(results, extra)))
    _drop_detach(graph)
    graph.lint()
    rewritten = GraphModule(gm, graph)
    rewritten.meta = dict(getattr(gm, "meta", {}))
    return rewritten, WriteBack(len(results), positions, tuple(attributes))


def _drop_detach(graph: torch.fx.Graph) -> None:
    """Replace every ``detach`` by its input, as upstream's ``remove_detach`` means to.

    Upstream's pass edits the graph without recompiling the module (2.3.0 to 2.14.0), so AOT tracing still runs the
    old code: ``y = x.detach(); y.add_(1)`` is traced as an ``alias`` of the cloned input, which functionalization
    refuses once that input is also an output ("View operation returned a tensor that is the same as the input
    base tensor": the differential campaign's gen-0-0078 on 2.3.0, 2.4.0, 2.5.0 and 2.7.0; torch 2.14 traces it).
    Without autograd a detach is the tensor itself, so writing through it writes the input, as in eager.
    """
    for node in list(graph.nodes):
        if (node.op == "call_method" and node.target == "detach") or node.target is torch.ops.aten.detach.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


def write_back(compiled: Callable, plan: WriteBack, dropped: Tuple[int, ...] = ()) -> Callable:
    """Call ``compiled`` (the rewritten graph, compiled) without the arguments at positions ``dropped`` (inputs the
    backend erased from the graph), copy the updated values into the caller's tensors and the attributes, and return
    the original outputs."""
    user_outputs, positions, attributes = plan.user_outputs, plan.input_positions, plan.attributes

    def run_and_write_back(*args: Any) -> Any:
        passed = [value for position, value in enumerate(args) if position not in dropped] if dropped else args
        outputs = compiled(*passed, *attributes)
        updated = outputs[user_outputs:]
        # A state update, not a differentiable op: the compiled graph has no autograd history to connect to.
        with torch.no_grad():
            for target, value in zip(itertools.chain([args[p] for p in positions], attributes), updated):
                target.copy_(value)
        return outputs[:user_outputs]

    run_and_write_back.__wrapped__ = compiled
    return run_and_write_back


# ---------------------------------------------------------------------------------------------------------------
# When the fake run fails: could the graph write anything at all?

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
        operator.imatmul,
        operator.iand,
        operator.ior,
        operator.ixor,
        operator.ilshift,
        operator.irshift,
    }
)
# They update running statistics in training mode, which no name, keyword or Dynamo-level schema says.
_RUNNING_STATISTICS = frozenset(
    {
        torch.nn.functional.batch_norm,
        torch.batch_norm,
        torch.nn.functional.instance_norm,
        torch.instance_norm,
        torch.native_batch_norm,
    }
)


def may_write_in_place(node: Node) -> bool:
    """Whether ``node`` could write into one of its arguments, judged from the graph alone (conservatively)."""
    if node.op == "call_module":
        return True
    if node.op not in ("call_method", "call_function"):
        return False
    target = node.target
    if "out" in node.kwargs or node.kwargs.get("inplace"):
        return True
    if node.op == "call_method":
        if target.startswith("__") and target.endswith("__"):
            return target.startswith("__i") or target == "__setitem__"
        return target.endswith("_")
    if target in _IN_PLACE_OPERATORS or target in _RUNNING_STATISTICS:
        return True
    if isinstance(target, torch._ops.HigherOrderOperator):  # its subgraphs are not looked into
        return True
    if isinstance(target, torch._ops.OpOverload):
        return bool(_written_slots(target, {}))
    name = getattr(target, "__name__", "")
    if name.endswith("_") and not name.endswith("__"):
        return True
    # torch.nn.functional takes `inplace` positionally too (relu(x, True)).
    return (
        getattr(target, "__module__", "") == "torch.nn.functional"
        and "inplace" in _parameters(target)
        and any(arg is True for arg in node.args)
    )


def _parameters(function: Callable) -> Tuple[str, ...]:
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ()


# ---------------------------------------------------------------------------------------------------------------
# The backend wrapper


def _dynamo_fallback_exceptions() -> Tuple[type, ...]:
    """Fake-tensor exceptions after which Dynamo runs the failing op eagerly instead of failing the compile."""
    from torch._dynamo import exc

    return tuple(getattr(exc, "exceptions_allowed_to_be_fallback", ()))


def compile_keeping_mutations(
    backend: Callable, gm: GraphModule, sample_inputs: Sequence[Any], *args: Any, **kwargs: Any
) -> Callable:
    """``backend(gm, sample_inputs, *args, **kwargs)``, with the graph's in-place updates of inputs kept.

    A graph that updates nothing gets ``backend``'s result unchanged.
    """
    try:
        mutations = find_mutations(gm, sample_inputs)
    except Exception as exc:
        writers = [node for node in gm.graph.nodes if may_write_in_place(node)]
        if not writers:
            return backend(gm, sample_inputs, *args, **kwargs)
        if isinstance(exc, _dynamo_fallback_exceptions()):
            # Upstream's trace runs the same op on the same fake tensors and fails alike; Dynamo then runs the
            # op in eager mode (a graph break), which keeps every update. Let it do the same for us.
            raise
        raise InputMutationError(
            f"could not run the graph on fake tensors ({type(exc).__name__}: {exc}) to find out whether node "
            f"'{writers[0].name}' updates a graph input or buffer in place, which the Torch-TensorRT backend would "
            "silently lose. Remedy: " + _ALTERNATIVES + "."
        ) from exc
    if not mutations:
        return backend(gm, sample_inputs, *args, **kwargs)
    check_mutations_keepable(mutations, gm, sample_inputs)
    for mutation in mutations:
        logger.info(
            "trt_compat: %s updates %s in place; its new value is returned by the compiled graph and "
            "copied back after each call",
            _written_by(mutation),
            describe_target(mutation.target),
        )
    rewritten, plan = return_updated_inputs(gm, mutations)
    names = [node.name for node in _placeholders(rewritten)][: len(sample_inputs)]
    compiled = backend(rewritten, list(sample_inputs) + list(plan.attributes), *args, **kwargs)
    # 2.4/2.5's backend erases the unused SymInt placeholders of the graph it gets (remove_sym_nodes, in place),
    # and its compiled module takes only the rest. Dynamo sees that on its own graph (upstream's in-place change
    # is why Dynamo reads the placeholders again after compiling), but here the backend changed the copy: Dynamo
    # still passes an argument for every placeholder of its graph, so those of the erased ones are dropped here.
    left = {node.name for node in _placeholders(rewritten)}
    return write_back(compiled, plan, tuple(i for i, name in enumerate(names) if name not in left))


# ---------------------------------------------------------------------------------------------------------------
# Reproducers (run by `python -m trt_compat verify` and the compatibility matrix)


class AddToInput(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return x * 2


class StepCounter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.count.add_(1)
        return x * self.count


class KVCacheWrite(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("cache", torch.zeros(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache[1] = x
        return self.cache.sum(0)


def _compiled_state(
    probe: Any,
    model: torch.nn.Module,
    x: torch.Tensor,
    state: Callable[[], torch.Tensor],
    expected: torch.Tensor,
    what: str,
) -> Optional[str]:
    """Compile and call ``model`` once; describe how ``state()`` differs from eager's ``expected`` afterwards."""
    try:
        probe.compile(model, x)
    except (AssertionError, RuntimeError) as exc:  # 2.4.0: AOT tracing fails on an update of a get_attr buffer
        return f"{what}: the backend fails instead: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    difference = probe.same(state(), expected)
    return None if difference is None else f"{what} is not kept: {difference}"


def check_input_mutation(probe: Any) -> Optional[str]:
    x = torch.arange(6.0).view(2, 3)
    expected = x + 1
    # Already on the device the probe compiles for, so that the probe passes this very tensor, not a copy.
    x = x.cuda() if probe.on_gpu else x
    return _compiled_state(probe, AddToInput().eval(), x, lambda: x, expected, "x.add_(1) on the caller's input")


def check_buffer_mutation(probe: Any) -> Optional[str]:
    model = StepCounter().eval()
    return _compiled_state(
        probe, model, torch.ones(2, 3), lambda: model.count, torch.ones(()), "self.count.add_(1) on a buffer"
    )


def check_kv_cache_write(probe: Any) -> Optional[str]:
    model, x = KVCacheWrite().eval(), torch.arange(3.0) + 1
    expected = torch.zeros(4, 3)
    expected[1] = x
    return _compiled_state(probe, model, x, lambda: model.cache, expected, "self.cache[1] = x into a buffer")


PATCH = Patch(
    name="keep_input_mutations",
    title="in-place updates of graph inputs and buffers survive the torch.compile backend",
    issue=None,
    first_affected="2.2.0",
    fixed_in=None,
    why=(
        "The torch.compile backend clones every graph input before AOT tracing (repair_input_aliasing), so "
        "in-place updates of inputs -- and of buffers, which Dynamo passes as inputs since torch 2.5 -- land on "
        "the clones and are silently lost: caller tensors, step counters and KV caches never change (measured on "
        "every release from 2.2.0 to 2.14.0). On 2.2.0-2.4.0 a buffer update fails AOT tracing instead."
    ),
    defects=(
        Defect(
            key="input_mutation_lost",
            title="an in-place update of a graph input never reaches the caller",
            check=check_input_mutation,
        ),
        Defect(
            key="buffer_mutation_lost",
            title="a buffer updated in place (a step counter) never changes",
            check=check_buffer_mutation,
        ),
        Defect(
            key="kv_cache_write_lost",
            title="an indexed write into a buffer (a KV cache) is lost",
            check=check_kv_cache_write,
        ),
    ),
)


def _keep_mutations(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    kwargs = dict(kwargs)
    gm = args[0] if args else kwargs.pop("gm")
    sample_inputs = args[1] if len(args) > 1 else kwargs.pop("sample_inputs")
    return compile_keeping_mutations(wrapped, gm, sample_inputs, *args[2:], **kwargs)


def _calls_global(function: Callable, module: Any, name: str) -> bool:
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    return code is not None and name in code.co_names and getattr(function, "__globals__", None) is vars(module)


def apply(ctx: PatchContext) -> None:
    backends = ctx.import_module(_BACKENDS_MODULE)
    pretraced = ctx.require_attr(backends, "_pretraced_backend", callable)
    if list(inspect.signature(inspect.unwrap(pretraced)).parameters)[:2] != ["gm", "sample_inputs"]:
        raise TargetChanged(f"{_BACKENDS_MODULE}._pretraced_backend no longer takes (gm, sample_inputs, ...)")
    # The defect lives in the clones repair_input_aliasing inserts; without them upstream has changed its approach.
    if not _calls_global(pretraced, backends, "repair_input_aliasing"):
        raise TargetChanged(f"{_BACKENDS_MODULE}._pretraced_backend no longer calls repair_input_aliasing")
    # Wrapping the module global only helps if the backend looks it up at call time.
    caller = ctx.require_attr(backends, "aot_torch_tensorrt_aten_backend", callable)
    if not _calls_global(caller, backends, "_pretraced_backend"):
        raise TargetChanged(
            f"{_BACKENDS_MODULE}.aot_torch_tensorrt_aten_backend no longer calls the module's _pretraced_backend"
        )
    ctx.wrap_function(backends, "_pretraced_backend", _keep_mutations)

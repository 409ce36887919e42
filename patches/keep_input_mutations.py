"""Keep in-place updates of graph inputs and buffers in the ``torch.compile`` backend, at the cost of what is written.

Not reported upstream yet. Before AOT tracing, ``backends._pretraced_backend`` calls ``repair_input_aliasing``,
which puts an ``aten.clone`` after every tensor placeholder of the Dynamo graph and makes every user read the
clone (``aot_export_joint_simple``, which the backend traces with, does not support input mutations). Every
in-place op on an input then writes into the clone, functionalisation turns it into an out-of-place op, and
the caller's tensor is never written. From torch 2.5 Dynamo passes a module's buffers as graph inputs too, so
they are cloned as well. Measured with ``options={"dryrun": True}`` on the CPU, compared with eager after each
of three calls, on every release from 2.3.0 to 2.14.0 (2.2.0, which has no dryrun, up to partitioning; 2.10.0's
dryrun with a no-op for the engine method it calls on blocks that are still PyTorch graphs):

* ``x.add_(1); return x * 2`` (and ``copy_``, slice assignment, writes through a view or a transpose,
  ``relu(x, inplace=True)``, ``out=x``): the caller's ``x`` is never updated, and outputs after the first call
  are wrong;
* ``self.count.add_(1); return x * self.count`` and a KV-cache write ``self.cache[pos] = x`` (or ``index_copy_``,
  ``index_put_``, ``copy_`` into a buffer): from 2.5.0 the buffer never changes and the outputs go wrong; on
  2.2.0-2.4.0 (torch 2.2-2.4 read buffers with ``get_attr`` nodes) AOT tracing fails on the update instead, so the
  graph runs in PyTorch (or, with ``pass_through_build_failures``, does not compile);
* ``BatchNorm`` in training mode: from 2.5.0 the running statistics never change.

Nothing warns. The graph the backend falls back to when conversion fails already has the clones, so it loses
the updates too.

**Finding the writes, only where there can be any.** A graph none of whose nodes can write into the memory of an
input is handed to upstream untouched, decided from the graph alone: a node that may write in place
(:func:`may_write_in_place`) must write into a tensor whose value Dynamo recorded (``meta['example_value']``) as
sharing storage with an input or ``get_attr`` tensor, or whose written operand cannot be told. Only then is the
graph run once on fresh fake tensors, watching which ATen ops write into the inputs' storage, as their schemas
declare (so writes through views, ``out=`` and ``batch_norm``'s running statistics count); only the writers
run, with the views of an input they write through and the views the graph returns (a fresh fake tensor shaped
like its recorded value stands in for anything else they need).
Nothing real is touched: a module kept as a ``call_module`` node (torch 2.2-2.4) runs on fake copies of its
parameters and buffers.

**Keeping them, in proportion to what is written.** When every write can be replayed (an in-place op on the
input or on a chain of views of it: ``copy_``, slice assignment, ``index_copy_``, ``index_put_``, ``scatter_``,
``fill_``, pointwise ops such as ``add_``), the graph is compiled unchanged except that it also returns the
tensors those writes take from the rest of the graph (the new row of a KV cache, its position), and after each
call the same writes run in PyTorch, in graph order, on the caller's own tensors: ``cache.index_copy_(0, pos,
row)`` costs what eager's costs, whatever the size of the cache. Outputs that are views of an updated input
are those views of the caller's tensor, as in eager. Before the first write, every index is checked (by reading
the region it would write), so a bad index raises before anything is written.
Otherwise (a running-statistics update, an ``out=`` op, a write by a higher-order op or a module) the graph
returns the final value of each updated input and it is copied back whole after each call, as AOT Autograd does
for the other backends. Buffers torch 2.2-2.4 read with ``get_attr`` nodes become extra graph inputs first, so
they are traced like inputs (and compile, where upstream's trace fails on them). A graph that writes nothing gets
exactly upstream's compiled module, at no cost per call.

What a real TensorRT engine does with it (no engine can be built here: only the dryrun, where blocks stay
PyTorch graphs, is tested): the engine computes the graph with the caller's buffer as an input; the values a
replayed write needs are extra engine outputs (one row for a KV cache); PyTorch then runs the write, e.g.
``index_copy_``, as its own CUDA kernel on the caller's tensor, on the same stream, after the engine. Reads of an
updated buffer later in the same graph read the functional update inside the engine (a scatter into a copy of the
buffer, as every AOT-traced backend computes it); the write-back itself stays the size of what is written.

What cannot be kept is refused at compile time with an :class:`InputMutationError` naming the node, the input and
the remedy, and nothing is written:

* a change of an input's shape, strides or storage (``t_``, ``resize_``, ``set_``; Dynamo runs these outside
  the graph, so only hand-made graphs reach the backend with them);
* an updated input whose memory overlaps another input's in the same call: the compiled graph reads each input as
  a separate tensor, so eager's reads of the write through the other one cannot be reproduced (views of one
  buffer that do not overlap, ``k = base[0]``, ``v = base[1]``, are fine). Dynamo does not guard on this, so a
  graph compiled for separate tensors and later called with overlapping ones computes as if they were separate --
  exactly what torch.compile's own AOT Autograd backends do (measured on torch 2.4.1 and 2.14.1 with
  ``backend="aot_eager"``). Where the overlapping tensors are ``get_attr`` buffers (torch 2.2-2.4) the graph goes
  to upstream untouched, whose trace fails on the update and runs the graph in PyTorch, which keeps it;
* a whole-tensor copy back into an input in which several elements share memory (an ``expand``-ed tensor): it
  cannot be written whole (a write into one row of it is replayed like any other);
* an update, under grad mode, of a tensor that requires grad, unless the replay keeps its autograd history exactly
  (its writes take no value from the compiled graph that would need one): the compiled graph has no autograd
  history, so the gradient would silently be wrong.

Differences from eager that remain: the writes happen after the compiled graph has run, so when the graph raises
half-way nothing is written (eager keeps the updates made before the failing op); an input copied back whole has
its version counter advanced once per call (a replayed one, once per write, as in eager); updated values carry no
autograd history (as no output of the Torch-TensorRT backend does). On a GPU an out-of-range index of a replayed
write is a device-side assert, as it is in eager.

Only the Dynamo graph's own inputs and ``get_attr`` tensors are watched: on torch 2.2-2.4 a built-in module kept
as a ``call_module`` node (e.g. ``BatchNorm`` in training mode) updates its buffers inside the submodule, and
upstream's AOT tracing fails on that and runs the graph in PyTorch, as without trt_compat.

Not changed here: with ``options={"use_distributed_mode_trace": True}`` (2.7 and newer) the backend traces through
AOT Autograd, which keeps the updates itself; its forward graphs write nothing, so they pass through untouched.
The export path (``torch_tensorrt.dynamo.compile``) is a different pipeline.

The functions below work on plain ``torch.fx`` graphs; ``apply`` wraps the module global ``_pretraced_backend``
that ``aot_torch_tensorrt_aten_backend`` calls.
"""

import contextlib
import functools
import inspect
import itertools
import logging
import operator
import unittest.mock
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Optional, Sequence, Set, Tuple

import torch
from torch.fx import GraphModule, Node
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from trt_compat._fake import running_on_fake
from trt_compat.patching import WRITES_KEPT_OUTSIDE, Defect, Patch, PatchContext, TargetChanged

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


# ---------------------------------------------------------------------------------------------------------------
# Which nodes may write in place, and into what: judged from the graph alone

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
# They update running statistics in training mode, which no name, keyword or Dynamo-level schema says. Every one of
# them takes its training switch (``training`` or ``use_input_stats``) sixth.
_RUNNING_STATISTICS = frozenset(
    {
        torch.nn.functional.batch_norm,
        torch.batch_norm,
        torch.nn.functional.instance_norm,
        torch.instance_norm,
        torch.native_batch_norm,
    }
)
_TRAINING_SWITCH = (5, ("training", "use_input_stats"))


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


@functools.lru_cache(maxsize=256)
def _parameters(function: Callable) -> Tuple[str, ...]:
    # Cached: asked for every torch.nn.functional call of every graph (a few dozen functions), and a signature is
    # rebuilt on each inspect.signature call.
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ()


def _written_operands(gm: GraphModule, node: Node) -> Optional[List[Any]]:
    """The arguments a node that may write in place writes, from the graph alone; None when that cannot be told.

    An in-place method or operator writes its first argument, an ``out=`` op its ``out``, an op overload what its
    schema marks as written; a running-statistics function in evaluation mode writes nothing. A built-in
    ``torch.nn`` module kept as a ``call_module`` node writes its input only when it was built ``inplace=True``
    (its own buffers are not graph inputs; see the module docstring).
    """
    target = node.target
    if node.op == "call_module":
        module = gm.get_submodule(target)
        if getattr(module, "inplace", False) is True:
            return list(node.args[:1])
        return [] if type(module).__module__.startswith("torch.nn.modules.") else None
    if "out" in node.kwargs:
        return tree_flatten(node.kwargs["out"])[0]
    if node.op == "call_function" and isinstance(target, torch._ops.HigherOrderOperator):
        return None
    if node.op == "call_function" and isinstance(target, torch._ops.OpOverload):
        slots = _written_slots(target, {})
        return [
            node.args[index] if index < len(node.args) else node.kwargs.get(name)
            for index, name in slots
            if index < len(node.args) or name in node.kwargs
        ]
    if node.op == "call_function" and target in _RUNNING_STATISTICS:
        position, names = _TRAINING_SWITCH
        switch = (
            node.args[position]
            if len(node.args) > position
            else next((node.kwargs[name] for name in names if name in node.kwargs), None)
        )
        return [] if switch is False else None
    # The first argument, or each tensor of it: torch._foreach_mul_(tensors, 0.9) writes a list. A node argument is
    # a leaf as it is: not flattened (this runs for every writer of every graph, before anything else).
    first = list(node.args[:1])
    return first if not first or isinstance(first[0], Node) else tree_flatten(first)[0]


def _recorded_value(node: Node) -> Any:
    return node.meta.get("example_value", node.meta.get("val"))


def _recorded_storages(value: Any) -> Optional[Set[StorageWeakRef]]:
    """Storages of the tensors in a recorded value; None when a tensor has none to tell (or there is no value)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):  # nearly every node's value: no flattening (runs for every graph input)
        storage = _storage_of(value)
        return None if storage is None else {storage}
    storages = set()
    for leaf in tree_flatten(value)[0]:
        if isinstance(leaf, torch.Tensor):
            storage = _storage_of(leaf)
            if storage is None:
                return None
            storages.add(storage)
    return storages


def may_write_an_input(gm: GraphModule) -> bool:
    """Whether any node of ``gm`` may write into the memory of a graph input or ``get_attr`` tensor (conservatively).

    Costs a look at each node and, for each node that may write, at the recorded values of the nodes its operand can
    share memory with: no fake or real run.
    """
    for writer in (node for node in gm.graph.nodes if may_write_in_place(node)):
        operands = _written_operands(gm, writer)
        if operands is None or any(_shares_an_input(operand) for operand in operands if isinstance(operand, Node)):
            return True
    return False


def _shares_an_input(node: Node) -> bool:
    """Whether ``node``'s recorded value may share memory with a graph input or ``get_attr`` tensor.

    Memory is shared only along the graph's edges (a view, an in-place op returning its operand), so only the nodes
    whose recorded values share ``node``'s storage are followed back, not every input of the graph; a node without a
    recorded value to tell counts as sharing.
    """
    storages = _recorded_storages(_recorded_value(node))
    if storages is None:
        return True
    seen, frontier = set(), [node]
    while frontier:
        current = frontier.pop()
        if current.op in ("placeholder", "get_attr"):
            return True
        for arg in current.all_input_nodes:
            if arg in seen:
                continue
            seen.add(arg)
            recorded = _recorded_storages(_recorded_value(arg))
            if recorded is None or recorded & storages:
                frontier.append(arg)
    return False


# ---------------------------------------------------------------------------------------------------------------
# Finding the writes: a run on fake tensors


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
                        self.writes.append((target, self.node, func))
        return func(*args, **kwargs)


class _FakeRun(torch.fx.Interpreter):
    """Runs a graph on fake tensors, recording which watched tensors each node writes and which it shares.

    ``get_attr`` tensors are replaced by fresh fake tensors (one per attribute) and ``call_module`` nodes run on fake
    copies of the module's parameters and buffers, so that nothing real is touched. With a ``plan`` only its nodes run,
    the nodes they need get a fresh fake tensor shaped like their recorded value, and only the inputs it names are
    watched. Higher-order ops cannot run under an
    extra dispatch mode on every release, so they run without the recorder and are checked by the version counters
    and layouts of the watched tensors around them.
    """

    def __init__(self, gm: GraphModule, plan: Optional["_RunPlan"] = None):
        # Values (fake tensors, nothing allocated) are kept to the end of the run, which spares the interpreter a walk
        # of the whole graph for each value's last use: 0.4 ms of a 200-node graph on torch 2.5.
        super().__init__(gm, garbage_collect_values=False)
        self.recorder = _WriteRecorder()
        self.plan = plan
        self.fakes: Dict[Node, torch.Tensor] = {}  # watched placeholder or first get_attr -> its fake tensor
        self.initial_layouts: Dict[Node, Tuple[Any, ...]] = {}
        self.shared: Dict[Node, FrozenSet[Node]] = {}  # node -> the watched targets its value shares storage with
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
        if self.plan is not None and self.recorder.node not in self.plan.watched and target not in self._attributes:
            return _fresh_fake(value)
        if target not in self._attributes:
            self._attributes[target] = self.watch(self.recorder.node, value)
        return self._attributes[target]

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        state = {name: _fresh_fake(t) for name, t in itertools.chain(module.named_parameters(), module.named_buffers())}
        return torch.func.functional_call(module, state, args, kwargs)

    def run_node(self, n: Node) -> Any:
        self.recorder.node = n
        if self.plan is not None and n.op != "output" and n not in self.plan.run:
            if n in self.plan.stand_in:
                return tree_map(lambda v: _fresh_fake(v) if isinstance(v, torch.Tensor) else v, _recorded_value(n))
            return None
        if n.op == "call_function" and isinstance(n.target, torch._ops.HigherOrderOperator):
            before = {node: (fake._version, _layout(fake)) for node, fake in self.fakes.items()}
            result = super().run_node(n)
            for node, fake in self.fakes.items():
                if before[node] != (fake._version, _layout(fake)):
                    self.recorder.writes.append((node, n, n.target))
        else:
            with self.recorder:
                result = super().run_node(n)
        shared = {
            self.recorder.watched[storage]
            for leaf in tree_flatten(result)[0]
            if isinstance(leaf, torch.Tensor)
            for storage in (_storage_of(leaf),)
            if storage in self.recorder.watched
        }
        if shared:
            self.shared[n] = frozenset(shared)
        return result


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
        recorded = [_recorded_value(node) for node in _placeholders(gm)]
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


@dataclass(frozen=True)
class _RunPlan:
    """Which nodes the fake run runs, which it stands in for, and which inputs it watches (see _plan_fake_run)."""

    watched: FrozenSet[Node]
    run: FrozenSet[Node]
    stand_in: FrozenSet[Node]


def _plan_fake_run(gm: GraphModule) -> Optional[_RunPlan]:
    """Only what can tell a write into an input needs running, judged from the values Dynamo recorded: the inputs a
    node that may write in place may write (all of them where a writer's operands cannot be told), those writers,
    the nodes sharing that storage which a writer needs (the views it writes through) or the graph returns (outputs
    that are views of an input), and whatever these need that has no recorded value. What they need that has one is
    stood in for by a fresh fake tensor shaped like it; everything else is skipped, reads of the inputs included (the
    attention's reads of a KV cache): a node that cannot write leads to no write unless a writer uses it. None (run
    everything, watch every input) when the recorded values cannot tell."""
    inputs = [node for node in gm.graph.nodes if node.op in ("placeholder", "get_attr")]
    storages = {node: _recorded_storages(_recorded_value(node)) for node in inputs}
    if any(found is None for found in storages.values()):
        return None
    writers = [node for node in gm.graph.nodes if may_write_in_place(node)]
    candidates: Set[StorageWeakRef] = set()
    for writer in writers:
        operands = _written_operands(gm, writer)
        if operands is None:
            candidates = set().union(*storages.values())
            break
        for operand in operands:
            if isinstance(operand, Node):
                written = _recorded_storages(_recorded_value(operand))
                candidates |= set().union(*storages.values()) if written is None else written
    watched = {node for node in inputs if storages[node] & candidates}
    writing = set(writers)
    returned = set(_output_node(gm).all_input_nodes)
    run, stand_in, needed = set(), set(), set()
    # From the last node back, so that a node's users have been decided before it is.
    for node in reversed(gm.graph.nodes):
        if node.op in ("placeholder", "get_attr", "output"):
            if node in needed and node not in watched:
                stand_in.add(node)
            continue
        if (
            node in writing
            or (node in needed and _recorded_value(node) is None)
            or ((node in needed or node in returned) and _may_share(node, candidates))
        ):
            run.add(node)
            needed.update(node.all_input_nodes)
        elif node in needed:
            stand_in.add(node)
    # Placeholders always run: they hand out the arguments in order (None for those nothing needs). Watched
    # attributes too, so that each is watched under its first reader.
    run.update(node for node in inputs if node.op == "placeholder" or node in watched)
    return _RunPlan(frozenset(watched), frozenset(run), frozenset(stand_in))


def _may_share(node: Node, storages: Set[StorageWeakRef]) -> bool:
    recorded = _recorded_storages(_recorded_value(node))
    return recorded is None or bool(recorded & storages)


def _run_on_fakes(gm: GraphModule, sample_inputs: Sequence[Any]) -> _FakeRun:
    plan = _plan_fake_run(gm)
    run = _FakeRun(gm, plan)
    with _quiet_fake_run(_fake_mode_of(gm, sample_inputs)):
        arguments = []
        for position, node in enumerate(_placeholders(gm)):
            sample = sample_inputs[position] if position < len(sample_inputs) else None
            value = node.meta.get("example_value", node.meta.get("val", sample))
            if not isinstance(value, torch.Tensor):
                arguments.append(value)
            elif plan is None or node in plan.watched:
                arguments.append(run.watch(node, value))
            else:
                arguments.append(_fresh_fake(value) if node in plan.stand_in else None)
        run.run(*arguments)
    return run


def _mutations_of(gm: GraphModule, run: _FakeRun) -> List[Mutation]:
    placeholders = _placeholders(gm)
    first_write: Dict[Node, Tuple[Node, Any]] = {}
    for target, writer, op in run.recorder.writes:
        first_write.setdefault(target, (writer, op))
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    return [
        Mutation(
            target,
            placeholders.index(target) if target.op == "placeholder" else None,
            writer,
            str(op),
            _layout(run.fakes[target]) != run.initial_layouts[target],
        )
        for target, (writer, op) in sorted(first_write.items(), key=lambda item: order[item[0]])
    ]


def find_mutations(gm: GraphModule, sample_inputs: Sequence[Any]) -> List[Mutation]:
    """The inputs and ``get_attr`` tensors ``gm`` writes, in graph order; [] when none.

    Runs ``gm`` once on fresh fake tensors shaped like its inputs (the values Dynamo recorded, else
    ``sample_inputs``). A write is an ATen op whose schema marks an argument as written (in-place and ``out=``
    ops, the ``copy_`` of a ``setitem``, ``batch_norm``'s running statistics) when that argument shares storage
    with an input -- so writes through views count -- or, for a higher-order op, a change of the input's version
    counter. A change of shape, strides or storage is recorded as ``layout_changed``.
    """
    return _mutations_of(gm, _run_on_fakes(gm, sample_inputs))


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


def _resolve(gm: GraphModule, target: str) -> Any:
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _values_of(gm: GraphModule, mutations: Sequence[Mutation], sample_inputs: Sequence[Any]) -> Dict[Node, Any]:
    """What each placeholder receives in this call, and each mutated attribute's tensor."""
    values: Dict[Node, Any] = dict(zip(_placeholders(gm), sample_inputs))
    values.update((m.target, _resolve(gm, m.target.target)) for m in mutations if m.target.op == "get_attr")
    return values


def _byte_range(t: torch.Tensor) -> Tuple[int, int]:
    """[first, last) bytes of its storage that ``t`` can reach; empty for a tensor without elements."""
    if t.numel() == 0:
        return (0, 0)
    first = t.storage_offset()
    last = first + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride())) + 1
    return (first * t.element_size(), last * t.element_size())


def _overlapping(values: Dict[Node, Any], target: Node) -> List[Node]:
    """The other nodes whose tensors may share memory with ``target``'s (same storage, intersecting byte ranges)."""
    value = values.get(target)
    storage = _storage_of(value) if isinstance(value, torch.Tensor) else None
    if storage is None:
        return []
    first, last = _byte_range(value)
    found = []
    for node, other in values.items():
        if node is target or not isinstance(other, torch.Tensor) or _storage_of(other) != storage:
            continue
        other_first, other_last = _byte_range(other)
        if first < other_last and other_first < last:
            found.append(node)
    return found


def _check_layouts(mutations: Sequence[Mutation]) -> None:
    for mutation in mutations:
        if mutation.layout_changed:
            raise InputMutationError(
                f"{_written_by(mutation)} changes the shape, strides or storage of {describe_target(mutation.target)}"
                " in place. The Torch-TensorRT backend traces the graph functionally and its engines return new "
                "tensors, so only value updates of inputs can be kept. Remedy: use the out-of-place op "
                "(x = x.t() instead of x.t_()) or change the input's shape outside the compiled function, or "
                + _ALTERNATIVES
                + "."
            )


def _overlap_refusal(mutation: Mutation, sharing: Sequence[Node]) -> InputMutationError:
    others = ", ".join(describe_target(node) for node in sharing)
    return InputMutationError(
        f"{_written_by(mutation)} updates {describe_target(mutation.target)} in place, and its memory overlaps "
        f"that of {others} in this call. The compiled graph reads every input as a separate tensor, so reads "
        "through the other one would not see the update as they do in eager mode. Remedy: pass tensors "
        "that do not share memory (e.g. a .clone() of one of them), or " + _ALTERNATIVES + "."
    )


def check_mutations_keepable(mutations: Sequence[Mutation], gm: GraphModule, sample_inputs: Sequence[Any]) -> None:
    """Raise :class:`InputMutationError` for a write the compiled graph cannot reproduce (see module docstring)."""
    _check_layouts(mutations)
    values = _values_of(gm, mutations, sample_inputs)
    for mutation in mutations:
        sharing = _overlapping(values, mutation.target)
        if sharing:
            raise _overlap_refusal(mutation, sharing)


def _attributes_overlap(mutations: Sequence[Mutation], gm: GraphModule, sample_inputs: Sequence[Any]) -> bool:
    """Whether an updated ``get_attr`` tensor overlaps another tensor the graph reads (torch 2.2-2.4 buffers)."""
    values = _values_of(gm, mutations, sample_inputs)
    return any(m.target.op == "get_attr" and _overlapping(values, m.target) for m in mutations)


def _grad_modes(gm: GraphModule) -> Dict[Node, bool]:
    """Whether grad mode is on at each node, following Dynamo's ``_set_grad_enabled`` calls from the current mode."""
    enabled, modes = torch.is_grad_enabled(), {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is torch._C._set_grad_enabled and node.args:
            enabled = bool(node.args[0])
        modes[node] = enabled
    return modes


def _requires_grad(gm: GraphModule, node: Node, sample_inputs: Sequence[Any]) -> bool:
    value = _recorded_value(node)
    if not isinstance(value, torch.Tensor) and node.op == "placeholder":
        position = _placeholders(gm).index(node)
        value = sample_inputs[position] if position < len(sample_inputs) else None
    if not isinstance(value, torch.Tensor) and node.op == "get_attr":
        value = _resolve(gm, node.target)
    return isinstance(value, torch.Tensor) and value.requires_grad


# ---------------------------------------------------------------------------------------------------------------
# The replay: the graph's writes, run again on the caller's tensors after each call

# ATen ops a replayed write may consist of, beyond the pointwise ones: none can fail for a reason the compile-time
# trace did not already check, except an out-of-range index, which _VALIDATIONS reads before anything is written.
_REGION_WRITES = frozenset({"aten::copy_", "aten::fill_", "aten::zero_", "aten::masked_fill_"})
_INDEXED_WRITES = frozenset(
    {
        "aten::index_copy_",
        "aten::index_add_",
        "aten::index_fill_",
        "aten::index_put_",
        "aten::_index_put_impl_",
        "aten::scatter_",
        "aten::scatter_add_",
        "aten::scatter_reduce_",
        "aten::put_",
    }
)


def _argument(args: tuple, kwargs: dict, position: int, name: str) -> Any:
    return args[position] if len(args) > position else kwargs[name]


def _index_tuple(indices: Any) -> Tuple[Any, ...]:
    # index_put_'s None means "every position of this dimension"; in Python indexing it would add a dimension.
    return tuple(slice(None) if index is None else index for index in indices)


def _read_selected(args: tuple, kwargs: dict) -> Any:
    return args[0].index_select(_argument(args, kwargs, 1, "dim"), _argument(args, kwargs, 2, "index"))


def _read_gathered(args: tuple, kwargs: dict) -> Any:
    return args[0].gather(_argument(args, kwargs, 1, "dim"), _argument(args, kwargs, 2, "index"))


# How to read, without writing, the region a write with indices will write: the read raises for a bad index as the
# write would. Keyed by the Python-level method the graph calls; the reader takes its arguments.
_VALIDATIONS: Dict[str, Callable[[tuple, dict], Any]] = {
    "index_copy_": _read_selected,
    "index_add_": _read_selected,
    "index_fill_": _read_selected,
    "scatter_": _read_gathered,
    "scatter_add_": _read_gathered,
    "scatter_reduce_": _read_gathered,
    "index_put_": lambda args, kwargs: args[0][_index_tuple(_argument(args, kwargs, 1, "indices"))],
    "put_": lambda args, kwargs: args[0].take(_argument(args, kwargs, 1, "index")),
    "__setitem__": lambda args, kwargs: args[0][args[1]],
}


def _validation_key(node: Node) -> Optional[str]:
    """The method a write calls (``setitem`` spelled as its method), the key of its reader in _VALIDATIONS."""
    if node.op == "call_method":
        return node.target
    return "__setitem__" if node.target is operator.setitem else None


def _checked(key: Optional[str], *args: Any, **kwargs: Any) -> Any:
    """What a write returns (its first argument), after reading the region it would write (see _VALIDATIONS)."""
    reader = _VALIDATIONS.get(key)
    if reader is not None:
        reader(args, kwargs)
    return args[0]


@dataclass(frozen=True)
class Replay:
    """The graph's writes to its inputs, and the outputs that are views of updated inputs, to run on real tensors.

    ``nodes`` are nodes of the original graph, in graph order: the writes and the chains of views they write
    through. Their arguments are the call's own arguments, updated attributes, other replayed nodes, or values the
    compiled graph returns after the user's outputs (``returned``). :meth:`program` makes them Python code.
    """

    nodes: Tuple[Node, ...]
    returned: Tuple[Node, ...]
    """Nodes whose values the compiled graph returns for the replay, in that order."""
    positions: Dict[Node, int]
    """Placeholder -> its argument position."""
    attributes: Dict[Node, int]
    """get_attr node -> index among the updated attributes."""
    grad_enabled: Dict[Node, bool]
    writers: FrozenSet[Node]

    def program(self) -> GraphModule:
        """``(arguments, attributes, returned) -> the replayed nodes' values``, in graph order, under each node's grad
        mode. Every write is first checked on its own, by reading the region it would write, so that a bad index
        raises before anything is written; then the nodes run again, writing. One module for both: its code is
        generated once per compile."""
        graph = torch.fx.Graph()
        sources = [graph.placeholder(name) for name in ("arguments", "attributes", "returned")]
        read: Dict[Node, Node] = {}

        def source(node: Node) -> Node:
            if node not in read:
                where, index = (
                    (2, self.returned.index(node))
                    if node in self.returned
                    else (0, self.positions[node])
                    if node in self.positions
                    else (1, self.attributes[node])
                )
                read[node] = graph.call_function(operator.getitem, (sources[where], index))
            return read[node]

        def value(copies: Dict[Node, Node], node: Node) -> Node:
            return copies.get(node) or source(node)

        grad = torch.is_grad_enabled()
        for check_only in (True, False):
            copies: Dict[Node, Node] = {}
            for node in self.nodes:
                if self.grad_enabled[node] != grad:
                    grad = self.grad_enabled[node]
                    graph.call_function(torch._C._set_grad_enabled, (grad,))
                args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), functools.partial(value, copies))
                if check_only and node in self.writers:
                    copies[node] = graph.call_function(_checked, (_validation_key(node), *args), kwargs)
                else:
                    copies[node] = graph.create_node(
                        node.op, node.target, args, kwargs, name=node.name if not check_only else None
                    )
        if grad != torch.is_grad_enabled():
            graph.call_function(torch._C._set_grad_enabled, (torch.is_grad_enabled(),))
        graph.output(tuple(copies[node] for node in self.nodes))
        return GraphModule(torch.nn.Module(), graph)


def _describe_node(node: Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"node '{node.name}' ({node.op} {target})"


def _writes_by_node(run: _FakeRun) -> Dict[Node, List[Tuple[Node, Any]]]:
    writes: Dict[Node, List[Tuple[Node, Any]]] = {}
    for target, writer, op in run.recorder.writes:
        writes.setdefault(writer, []).append((target, op))
    return writes


def _replayable_writer(gm: GraphModule, node: Node, writes: Sequence[Tuple[Node, Any]], run: _FakeRun) -> bool:
    """A method or plain function writing only (views of) its first argument, by ops a replay can repeat safely."""
    if node.op not in ("call_method", "call_function") or isinstance(node.target, torch._ops.HigherOrderOperator):
        return False
    if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
        return False
    if "out" in node.kwargs or not node.args or not isinstance(node.args[0], Node):
        return False
    first = run.shared.get(node.args[0], frozenset())
    for target, op in writes:
        name = getattr(getattr(op, "_schema", None), "name", "")
        pointwise = torch.Tag.pointwise in getattr(op, "tags", ())
        if target not in first or not (pointwise or name in _REGION_WRITES or name in _INDEXED_WRITES):
            return False
        if name in _INDEXED_WRITES and _validation_key(node) not in _VALIDATIONS:
            return False
    return True


def _written_later(gm: GraphModule, node: Node, after: Node) -> bool:
    """Whether a node after ``after`` may write into ``node``'s memory (judged from recorded values)."""
    storages = _recorded_storages(_recorded_value(node))
    if not storages:
        return True
    seen = False
    for candidate in gm.graph.nodes:
        if candidate is after:
            seen = True
            continue
        if not seen or not may_write_in_place(candidate):
            continue
        operands = _written_operands(gm, candidate)
        if operands is None:
            return True
        for operand in operands:
            written = _recorded_storages(_recorded_value(operand)) if isinstance(operand, Node) else set()
            if written is None or written & storages:
                return True
    return False


# Integer arithmetic and size queries: a size a write's view or slice needs (``cache[pos:pos + n]`` with dynamic
# shapes) is computed again from the call's own arguments rather than returned by the compiled graph.
_SIZE_ARITHMETIC = frozenset(
    {operator.add, operator.sub, operator.mul, operator.floordiv, operator.mod, operator.neg, operator.getitem}
)
_SIZE_QUERIES = frozenset({"size", "dim", "numel", "stride", "storage_offset"})


def _recomputable_size(node: Node) -> bool:
    """An integer (or symbolic integer) that integer arithmetic or a size query computes: cheap to compute again."""
    value = _recorded_value(node)
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)):
        return False
    if node.op == "call_method":
        return node.target in _SIZE_QUERIES
    return node.op == "call_function" and (
        node.target in _SIZE_ARITHMETIC or node.target is getattr(torch.ops.aten.sym_size, "int", None)
    )


def plan_replay(
    gm: GraphModule, mutations: Sequence[Mutation], run: _FakeRun, sample_inputs: Sequence[Any]
) -> Tuple[Optional[Replay], str]:
    """The replay of every write to an input, or (None, why not) when some write cannot be replayed exactly."""
    mutated = {m.target for m in mutations}
    writes = _writes_by_node(run)
    writers = [node for node, targets in writes.items() if any(target in mutated for target, _ in targets)]
    for writer in writers:
        if not _replayable_writer(gm, writer, writes[writer], run):
            return None, f"{_describe_node(writer)} is not a write a replay can repeat"
    outputs = [arg for arg in tree_flatten(_output_node(gm).args[0])[0] if isinstance(arg, Node)]
    aliased_outputs = [node for node in outputs if run.shared.get(node, frozenset()) & mutated]
    chosen: Set[Node] = set()
    returned: List[Node] = []
    pending = list(writers) + aliased_outputs
    while pending:
        node = pending.pop()
        if node in chosen or node.op in ("placeholder", "get_attr"):
            continue
        if node.op not in ("call_method", "call_function") or isinstance(node.target, torch._ops.HigherOrderOperator):
            return None, f"{_describe_node(node)} leads to a write and cannot run again"
        chosen.add(node)
        for arg in node.all_input_nodes:
            if arg in chosen or arg.op in ("placeholder", "get_attr") or arg in returned:
                continue
            if arg in run.shared or _recomputable_size(arg):
                pending.append(arg)
            elif isinstance(_recorded_value(arg), torch.Tensor):
                if _written_later(gm, arg, node):
                    return None, f"node '{arg.name}', written into an input by '{node.name}', changes afterwards"
                returned.append(arg)
            else:
                return None, f"node '{node.name}' needs '{arg.name}', a value the compiled graph cannot return"
    grad = _grad_modes(gm)
    for writer in writers:
        if grad[writer] and any(_requires_grad(gm, t, sample_inputs) for t, _ in writes[writer] if t in mutated):
            if any(_requires_grad(gm, arg, sample_inputs) for arg in returned):
                return None, f"node '{writer.name}' writes a value with autograd history into a tensor requiring grad"
    placeholders = _placeholders(gm)
    attributes = [m.target for m in mutations if m.target.op == "get_attr"]
    for node in chosen:
        for arg in node.all_input_nodes:
            if arg.op == "get_attr" and arg.target not in {a.target for a in attributes}:
                return None, f"node '{node.name}' reads attribute '{arg.target}', which it does not update"
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    first_attribute = {a.target: index for index, a in enumerate(attributes)}
    return (
        Replay(
            nodes=tuple(sorted(chosen, key=order.__getitem__)),
            returned=tuple(returned),
            positions={node: index for index, node in enumerate(placeholders)},
            attributes={
                node: first_attribute[node.target]
                for node in gm.graph.nodes
                if node.op == "get_attr" and node.target in first_attribute
            },
            grad_enabled={node: grad[node] for node in chosen},
            writers=frozenset(writers),
        ),
        "",
    )


# ---------------------------------------------------------------------------------------------------------------
# Carrying values out of the graph


@dataclass(frozen=True)
class WriteBack:
    """How the rewritten graph hands back what the caller's tensors need: the plan :func:`write_back` executes."""

    outputs: Tuple[Tuple[str, Any], ...]
    """For each output of the original graph: ("compiled", index into the compiled outputs) or ("replayed", node)."""
    returned_from: int
    """Index of the first compiled output that is not a user output: the replay's values, then whole updated values."""
    replay: Optional[Replay]
    input_positions: Tuple[int, ...]
    """Argument positions of the inputs copied back whole, in the order of their extra outputs."""
    attributes: Tuple[torch.Tensor, ...]
    """Tensors that were ``get_attr`` nodes: passed as extra trailing arguments."""
    copied_attributes: Tuple[int, ...]
    """Indices of the attributes copied back whole, after the inputs."""
    compile: bool = True
    """False when the rewritten graph returns nothing: every output and write is replayed, no graph is compiled."""


def _output_node(gm: GraphModule) -> Node:
    return next(node for node in reversed(gm.graph.nodes) if node.op == "output")


def return_updated_inputs(
    gm: GraphModule, mutations: Sequence[Mutation], replay: Optional[Replay] = None
) -> Tuple[GraphModule, WriteBack]:
    """A copy of ``gm`` that also returns what the write-back needs, and the plan for :func:`write_back`.

    With a ``replay``: the values its writes take from the graph, and no user output that it computes itself (a
    view of an updated input). Without: the final value of every mutated input and attribute, to be copied back
    whole (in eager execution they are the updated tensors themselves; once Torch-TensorRT has inserted its clones
    and traced, they are the updated values). Each mutated ``get_attr`` tensor becomes a new placeholder after the
    existing ones (read by every ``get_attr`` node of that attribute), so it is traced and compiled like an input.
    ``gm`` itself is left as it is: Dynamo reads its placeholders again after compiling, to know what to pass.
    """
    graph = torch.fx.Graph()
    copies: Dict[Node, Node] = {}
    results = graph.graph_copy(gm.graph, copies)
    if not isinstance(results, (tuple, list)):
        raise InputMutationError(
            f"the graph returns {type(results).__name__} rather than a tuple of outputs (as Dynamo graphs do), so "
            "the updated inputs cannot be added to its outputs"
        )
    original_outputs = list(_output_node(gm).args[0])
    replayed = set(replay.nodes) if replay is not None else set()
    kept, plan = [], []
    for original, copied in zip(original_outputs, results):
        if isinstance(original, Node) and original in replayed:
            plan.append(("replayed", original))
        else:
            plan.append(("compiled", len(kept)))
            kept.append(copied)
    attribute_nodes = [m.target for m in mutations if m.target.op == "get_attr"]
    if replay is not None:
        extra = [copies[node] for node in replay.returned]
        positions, copied_attributes = (), ()
    else:
        extra = [copies[m.target] for m in mutations if m.target.op == "placeholder"]
        positions = tuple(m.position for m in mutations if m.target.op == "placeholder")
        copied_attributes = tuple(range(len(attribute_nodes)))
    attributes = []
    last_input = [node for node in graph.nodes if node.op == "placeholder"][-1:]
    lifted = {}
    for node in attribute_nodes:
        target = node.target
        with graph.inserting_after(last_input[0]) if last_input else graph.inserting_before(None):
            placeholder = graph.placeholder(target.replace(".", "_"), type_expr=torch.Tensor)
        placeholder.meta = dict(node.meta)
        last_input = [placeholder]
        for reader in [n for n in graph.nodes if n.op == "get_attr" and n.target == target]:
            reader.replace_all_uses_with(placeholder)
            graph.erase_node(reader)
        attributes.append(_resolve(gm, target))
        lifted[copies[node]] = placeholder
    if replay is None:
        extra += [lifted[copies[node]] for node in attribute_nodes]
    # Nodes only the replay needed stay: in-place ops have no users to tell dead code from a write, and AOT tracing
    # drops what no output needs.
    graph.output(type(results)(itertools.chain(kept, extra)))
    _drop_detach(graph)
    rewritten = _graph_module_like(gm, graph)
    rewritten.meta = dict(getattr(gm, "meta", {}))
    placeholders = [node.name for node in graph.nodes if node.op == "placeholder"]
    rewritten.meta[WRITES_KEPT_OUTSIDE] = frozenset(
        [placeholders[m.position] for m in mutations if m.target.op == "placeholder"]
        + [lifted[copies[node]].name for node in attribute_nodes]
    )
    plan_ = WriteBack(
        outputs=tuple(plan),
        returned_from=len(kept),
        replay=replay,
        input_positions=positions,
        attributes=tuple(attributes),
        copied_attributes=copied_attributes,
        compile=bool(kept or extra),
    )
    return rewritten, plan_


def _graph_module_like(gm: GraphModule, graph: torch.fx.Graph) -> GraphModule:
    """A module of ``graph`` with ``gm``'s attributes, of the kind Dynamo handed over: lazy when ``gm`` is lazy.

    A lazy module generates its Python code when first called, not when built. Upstream's backend edits the graph
    it gets (its clones) and regenerates the code before tracing, so code generated here would be thrown away: on
    the Llama decoding step that is a third of this patch's work (torch 2.14, measured with ``bench_patch_cost``).
    """
    try:
        from torch.fx._lazy_graph_module import _LazyGraphModule
    except ImportError:  # a torch without lazy modules builds every module eagerly
        return GraphModule(gm, graph)
    return (_LazyGraphModule if isinstance(gm, _LazyGraphModule) else GraphModule)(gm, graph)


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


def write_back(compiled: Optional[Callable], plan: WriteBack, dropped: Tuple[int, ...] = ()) -> Callable:
    """Call ``compiled`` (the rewritten graph, compiled) without the arguments at positions ``dropped`` (inputs the
    backend erased from the graph), put the updates into the caller's tensors and the attributes (replayed, or
    copied back whole), and return the original graph's outputs."""
    attributes, replay, start = plan.attributes, plan.replay, plan.returned_from
    if replay is not None:
        replay_writes = replay.program()
        replayed_index = {node: index for index, node in enumerate(replay.nodes)}

    def run_and_write_back(*args: Any) -> Any:
        passed = [value for position, value in enumerate(args) if position not in dropped] if dropped else args
        outputs = compiled(*passed, *attributes) if plan.compile else ()
        if replay is not None:
            replayed = replay_writes(args, attributes, tuple(outputs[start:]))
            return [
                outputs[index] if kind == "compiled" else replayed[replayed_index[index]]
                for kind, index in plan.outputs
            ]
        # A state update, not a differentiable op (refused where autograd would need to see it).
        targets = [args[p] for p in plan.input_positions] + [attributes[i] for i in plan.copied_attributes]
        with torch.no_grad():
            for target, value in zip(targets, outputs[start:]):
                target.copy_(value)
        return [outputs[index] for _, index in plan.outputs]

    run_and_write_back.__wrapped__ = compiled
    return run_and_write_back


# ---------------------------------------------------------------------------------------------------------------
# The backend wrapper


def _dynamo_fallback_exceptions() -> Tuple[type, ...]:
    """Fake-tensor exceptions after which Dynamo runs the failing op eagerly instead of failing the compile."""
    from torch._dynamo import exc

    return tuple(getattr(exc, "exceptions_allowed_to_be_fallback", ()))


def _check_copy_back(
    mutations: Sequence[Mutation], gm: GraphModule, sample_inputs: Sequence[Any], why_not_replayed: str
) -> None:
    """Refuse what a whole copy back cannot keep: self-overlapping memory, and autograd's view of the update."""
    values = _values_of(gm, mutations, sample_inputs)
    grad = _grad_modes(gm)
    for mutation in mutations:
        value = values.get(mutation.target)
        if isinstance(value, torch.Tensor) and torch._debug_has_internal_overlap(value) == 1:
            raise InputMutationError(
                f"{_written_by(mutation)} updates {describe_target(mutation.target)}, in which several elements share "
                f"memory (e.g. an expand()-ed tensor), and the update cannot be replayed ({why_not_replayed}), so "
                "it would have to be copied back whole, which such a tensor does not allow. Remedy: pass a tensor "
                "whose elements do not share memory (.contiguous() or .clone()), or " + _ALTERNATIVES + "."
            )
        if grad[mutation.writer] and _requires_grad(gm, mutation.target, sample_inputs):
            raise InputMutationError(
                f"{_written_by(mutation)} updates {describe_target(mutation.target)}, which requires grad, with grad "
                f"mode on, and the update cannot be replayed ({why_not_replayed}). The compiled graph has no "
                "autograd history, so gradients through the updated tensor would be wrong. Remedy: call the "
                "compiled function under torch.no_grad() (or torch.inference_mode()), or pass a tensor that does "
                "not require grad (.detach()), or " + _ALTERNATIVES + "."
            )


def compile_keeping_mutations(
    backend: Callable, gm: GraphModule, sample_inputs: Sequence[Any], *args: Any, **kwargs: Any
) -> Callable:
    """``backend(gm, sample_inputs, *args, **kwargs)``, with the graph's in-place updates of inputs kept.

    A graph that updates nothing gets ``backend``'s result unchanged.
    """
    if not may_write_an_input(gm):
        return backend(gm, sample_inputs, *args, **kwargs)
    try:
        run = _run_on_fakes(gm, sample_inputs)
    except Exception as exc:
        if isinstance(exc, _dynamo_fallback_exceptions()):
            # Upstream's trace runs the same op on the same fake tensors and fails alike; Dynamo then runs the
            # op in eager mode (a graph break), which keeps every update. Let it do the same for us.
            raise
        writer = next(node for node in gm.graph.nodes if may_write_in_place(node))
        raise InputMutationError(
            f"could not run the graph on fake tensors ({type(exc).__name__}: {exc}) to find out whether node "
            f"'{writer.name}' updates a graph input or buffer in place, which the Torch-TensorRT backend would "
            "silently lose. Remedy: " + _ALTERNATIVES + "."
        ) from exc
    mutations = _mutations_of(gm, run)
    if not mutations:
        return backend(gm, sample_inputs, *args, **kwargs)
    _check_layouts(mutations)
    if _attributes_overlap(mutations, gm, sample_inputs):
        logger.info(
            "trt_compat: an updated attribute overlaps another tensor of the graph; the graph goes to the backend "
            "as it is, whose trace fails on the update and runs it in PyTorch, which keeps it"
        )
        return backend(gm, sample_inputs, *args, **kwargs)
    check_mutations_keepable(mutations, gm, sample_inputs)
    replay, why_not = plan_replay(gm, mutations, run, sample_inputs)
    if replay is None:
        _check_copy_back(mutations, gm, sample_inputs, why_not)
    for mutation in mutations:
        logger.info(
            "trt_compat: %s updates %s in place; %s",
            _written_by(mutation),
            describe_target(mutation.target),
            "the write is replayed on it after each call"
            if replay is not None
            else f"its new value is copied back after each call ({why_not})",
        )
    rewritten, plan = return_updated_inputs(gm, mutations, replay)
    if not plan.compile:
        return write_back(None, plan)
    names = [node.name for node in _placeholders(rewritten)]
    compiled = backend(rewritten, list(sample_inputs) + list(plan.attributes), *args, **kwargs)
    if compiled is rewritten and not _reads_inputs_through_clones(rewritten, rewritten.meta[WRITES_KEPT_OUTSIDE]):
        # Upstream fell back to running the graph in PyTorch before inserting its clones: it writes the caller's
        # tensors itself, as eager does, and replaying or copying on top would write twice.
        logger.info("trt_compat: the backend runs the graph in PyTorch on the caller's tensors; it runs as is")
        return gm
    # 2.4/2.5's backend erases the unused SymInt placeholders of the graph it gets (remove_sym_nodes, in place), and
    # its compiled module takes only the rest. Dynamo sees that on its own graph (which is why it reads the
    # placeholders again after compiling), but here the backend changed the copy: Dynamo still passes an argument
    # for every placeholder of its graph, so those of the erased ones are dropped (the campaign found it, 2.5.0).
    left = {node.name for node in _placeholders(rewritten)}
    return write_back(
        compiled, plan, tuple(i for i, name in enumerate(names[: len(sample_inputs)]) if name not in left)
    )


def _reads_inputs_through_clones(rewritten: GraphModule, updated: FrozenSet[str]) -> bool:
    """Whether every updated input of ``rewritten`` (by name) is read only by an ``aten.clone`` (upstream's
    ``repair_input_aliasing``), so that running the graph writes clones, never the caller's tensors."""
    return all(
        user.op == "call_function" and user.target is torch.ops.aten.clone.default
        for node in _placeholders(rewritten)
        if node.name in updated
        for user in node.users
    )


# ---------------------------------------------------------------------------------------------------------------
# Reproducers (run by `python -m trt_compat verify` and the compatibility matrix)


class AddToInput(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return x * 2


class StepCounter(torch.nn.Module):
    """``self.count.add_(1); return x * self.count``: the reproducers' model of an updated buffer."""

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


# ---------------------------------------------------------------------------------------------------------------
# The demonstration (`trt-compat demo`): torch alone, with a stand-in for the backend up to partitioning


def clone_every_input(gm: GraphModule) -> None:
    """Give every tensor input a clone that all its users read, as the Torch-TensorRT backend does before tracing
    (``repair_input_aliasing``)."""
    inputs = [
        n
        for n in gm.graph.nodes
        if n.op == "placeholder" and isinstance(n.type, type) and issubclass(n.type, torch.Tensor)
    ]
    for node in inputs:
        with gm.graph.inserting_after(inputs[-1]):
            clone = gm.graph.call_function(torch.ops.aten.clone.default, (node,))
        node.replace_all_uses_with(clone, delete_user_cb=lambda user, clone=clone: user is not clone)
    gm.recompile()


def clone_and_trace(gm: GraphModule, sample_inputs: Sequence[Any]) -> Callable:
    """A stand-in for the Torch-TensorRT backend up to partitioning, run in PyTorch: the clones, then the functional
    AOT trace (``aot_export_joint_simple`` in the graph's fake mode, real tensors allowed)."""
    from torch._functorch.aot_autograd import aot_export_joint_simple
    from torch._guards import detect_fake_mode

    fake_mode = detect_fake_mode(sample_inputs)
    with unittest.mock.patch.object(fake_mode, "allow_non_fake_inputs", True), fake_mode:
        clone_every_input(gm)
        return aot_export_joint_simple(gm, list(sample_inputs), trace_joint=False)


class DecoderStep(torch.nn.Module):
    """One decoder step: the new key row written into the caller's KV cache at ``position``, then scores over the
    whole cache."""

    def __init__(self) -> None:
        super().__init__()
        self.key = torch.nn.Linear(64, 64)

    def forward(self, x: torch.Tensor, cache: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        cache.index_copy_(0, position, self.key(x))
        return cache @ x.T


def _decode(backend: Callable, steps: int = 3) -> Tuple[List[bool], List[bool], torch.Tensor]:
    """Per step, whether the compiled model's output and the caller's cache are those of eager, bit for bit; and
    the compiled model's cache at the end."""
    from trt_compat.demo import identical

    torch.manual_seed(0)
    model = DecoderStep().eval()
    cache, eager_cache = torch.zeros(256, 64), torch.zeros(256, 64)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, dynamic=False)
    outputs, caches = [], []
    with torch.no_grad():
        for step in range(steps):
            x, position = torch.randn(1, 64, generator=torch.Generator().manual_seed(step)), torch.tensor([step])
            expected = model(x, eager_cache, position)
            outputs.append(identical(compiled(x, cache, position), expected))
            caches.append(identical(cache, eager_cache))
    torch._dynamo.reset()
    return outputs, caches, cache


def demonstrate(say: Callable[[str], None]) -> list:
    """``trt-compat demo``: three decoder steps writing a KV cache the caller holds, as upstream compiles them (a
    stand-in) and with trt_compat, against eager."""
    from trt_compat.demo import WITH, WITHOUT, Check, as_installed

    say(
        "upstream: the torch.compile backend clones every graph input before its AOT trace (repair_input_aliasing), "
        "so an in-place update of an input or buffer lands on the clone: a KV cache written with index_copy_ never "
        "changes, and every later step computes with a stale cache (wrong numbers, no error)."
    )
    outputs, caches, cache = _decode(clone_and_trace)
    rows = int(cache.abs().sum(1).count_nonzero())
    say(f"three decoder steps, each writing one row of a {list(cache.shape)} cache the caller holds")
    say(
        f"without trt_compat (a stand-in: the clones, then the functional AOT trace): cache rows written {rows} of "
        f"{len(caches)}; steps whose output is eager's: {sum(outputs)} of {len(outputs)}"
    )
    returned: List[Tuple[List[int], int]] = []

    def compiled_recording_outputs(gm: GraphModule, sample_inputs: Sequence[Any]) -> Callable:
        traced = clone_and_trace(gm, sample_inputs)

        def run(*args: Any) -> Any:
            results = traced(*args)
            returned[:] = [(list(t.shape), t.nbytes) for t in results]
            return results

        return run

    kept_outputs, kept_caches, cache = _decode(as_installed(_keep_mutations, compiled_recording_outputs))
    say(
        f"with trt_compat: cache bit-identical to eager after every step: {all(kept_caches)}; outputs: "
        f"{all(kept_outputs)}. The compiled graph returns "
        + " and ".join(f"{shape} ({size} bytes)" for shape, size in returned)
        + f", the scores and the new row, not the {list(cache.shape)} cache ({cache.nbytes} bytes): index_copy_ "
        "writes that row into the caller's cache after each call."
    )
    cache_sized = [shape for shape, _ in returned if shape == list(cache.shape)]
    return [
        Check(PATCH.name, WITHOUT, "the stand-in loses the cache update", not all(caches), f"{rows} rows written"),
        Check(PATCH.name, WITH, "cache bit-identical to eager after every step", all(kept_caches)),
        Check(PATCH.name, WITH, "outputs bit-identical to eager at every step", all(kept_outputs)),
        Check(
            PATCH.name,
            WITH,
            "the compiled graph returns the row, not the cache",
            bool(returned) and not cache_sized,
            str([shape for shape, _ in returned]),
        ),
    ]


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

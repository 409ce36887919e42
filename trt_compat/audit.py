"""Audits that name the Torch-TensorRT graph pass that broke a graph: its metadata, or its values.

**Metadata audit** (``TRT_COMPAT_AUDIT=1``, ``=metadata``). Torch-TensorRT trusts ``meta['val']`` all the way to
partitioning and engine inputs, so a lowering pass that leaves a wrong shape or a stale tuple there (#3221, #3185)
surfaces much later, far from its cause. Every pass of the post-lowering pass manager (the list
``trt_compat.patching.post_lowering_passes`` finds, ``ATEN_POST_LOWERING_PASSES``) is wrapped: after it runs, the
graph is re-propagated on fake tensors from its inputs' ``meta['val']`` and every node whose recorded value
disagrees (structure, shape or dtype) and did not already disagree before that pass is reported, naming pass, node,
op and both values.

**Value audit** (``TRT_COMPAT_AUDIT=values``; both audits: ``=metadata,values`` or ``=all``; a word not understood
is ignored with a warning, in strict mode an error: it never switches on another audit). A pass that changes
what the graph computes gives wrong numbers and no error. Every graph pass between the user's model and
partitioning is wrapped: the passes the ``torch.compile`` backend's ``_pretraced_backend`` calls itself
(:func:`backend_passes` finds them in each release's code: ``fold_get_attr_item_calls``, ``repair_input_aliasing``,
``remove_detach``, ...), its AOT tracing (``aot_export_joint_simple``, with Torch-TensorRT's decompositions) and the
post-lowering passes; they are looked up by name in the backends module, so that is where they are wrapped
(``Changes.wrap_function``). The graph is run on real tensors before and after the pass,
on the same inputs, and its outputs and the final contents of its inputs, parameters and buffers (in-place
updates) are compared bit for bit (NaN equals NaN; the sign of zero counts). The first pass that changed anything
is named, with the node (the first output that differs, or the input whose final contents differ) and the largest
difference. Inputs are the compile's real tensors where the graph has them (Dynamo keeps a reference to each
parameter and to the first call's inputs: ``.item()`` folding bakes real parameter values in, so random ones
would make a correct pass look wrong), and two generated draws for the rest and for the graph's own inputs: one
with NaN, +-inf, ties and -0.0 mixed in, one finite (NaN hides differences). A graph that cannot run on an input
set is not judged on it (logged at debug level). :data:`TOLERANCES` lists the steps meant to change numerics
(AOT tracing's decompositions round differently); every other pass must keep every bit.

    TRT_COMPAT_AUDIT=values python app.py       # or, in Python:
    from trt_compat import audit
    with audit.auditing("values") as found:     # audit.auditing() alone: the metadata audit
        torch.compile(model, backend="torch_tensorrt")(x)
    audit.findings()                            # every finding so far, first broken first

Each finding is logged as a warning on the ``trt_compat`` logger; with ``TRT_COMPAT_STRICT=1`` the first one
raises :class:`AuditError` (a ``trt_compat.PatchError``) out of the pass. Off by default and then free: nothing is
wrapped, and importing this module imports neither torch nor torch_tensorrt. Every change to Torch-TensorRT goes
through :class:`trt_compat.patching.Changes` and is undone exactly when the audit is switched off. The fake
propagation runs in the graph's own fake mode, so on dynamic shapes it may add guards to its shape environment, as
any re-trace would; the value audit runs the whole graph twice per pass and input set: audits are for diagnosing,
not for production runs.
"""

import contextlib
import functools
import importlib
import logging
import os
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, NamedTuple, Optional, Tuple

from ._config import OFF, ON, read_config, warn_once
from ._errors import PatchError
from ._state import LOCK
from .describe import MISSING, op_name
from .describe import value as describe_value
from .patching import WRITES_KEPT_OUTSIDE

logger = logging.getLogger("trt_compat")

ENV = "TRT_COMPAT_AUDIT"
METADATA = "metadata"
VALUES = "values"
MODES = (METADATA, VALUES)
ALL = "all"
ACCEPTED = f"{'/'.join(ON)} or {METADATA}; {VALUES}; {METADATA},{VALUES} or {ALL}; {'/'.join(OFF)} or empty for none"
# Findings kept for findings(); a graph broken everywhere must not grow memory without bound.
MAX_FINDINGS = 1000


class AuditError(PatchError):
    """Strict mode: a pass left a ``meta['val']`` that fake propagation contradicts, or changed the graph's values."""


@dataclass(frozen=True)
class Mismatch:
    """One node whose recorded ``meta['val']`` is not what fake propagation of the graph gives."""

    node: str
    # Not compared: a pass that only retargets a node (view -> reshape) has not introduced its mismatch.
    op: str = field(compare=False)
    recorded: str = ""
    propagated: str = ""

    def __str__(self) -> str:
        return (
            f"node '{self.node}' ({self.op}): meta['val'] is {self.recorded}, fake propagation gives {self.propagated}"
        )


@dataclass(frozen=True)
class Finding:
    """A mismatch a lowering pass introduced (it was not there before the pass ran)."""

    pass_name: str
    node: str
    op: str
    recorded: str
    propagated: str

    def __str__(self) -> str:
        return (
            f"lowering pass '{self.pass_name}' broke meta['val'] of node '{self.node}' ({self.op}): "
            f"meta['val'] is {self.recorded}, fake propagation gives {self.propagated}"
        )


@dataclass(frozen=True)
class ValueFinding:
    """A pass changed what the graph computes: an output, or the final contents of an input, parameter or buffer."""

    pass_name: str
    phase: str  # PRE_AOT, AOT, POST_AOT or POST_LOWERING
    release: str  # the torch-tensorrt version that ran the pass
    node: str  # the node of the first output that differs, or the input / attribute whose contents differ
    op: str
    what: str  # e.g. "output 0", "final contents of input 'l_x_'"
    difference: float  # largest absolute difference (inf: NaN against a number, or a shape, dtype or error change)
    detail: str
    inputs: str  # the input set it was seen on

    def __str__(self) -> str:
        where = f"{self.what} (node '{self.node}', {self.op})" if self.what.startswith("output ") else self.what
        return (
            f"{self.phase} pass '{self.pass_name}' (torch-tensorrt {self.release}) changed the graph's values: "
            f"{where}: {self.detail}, on {self.inputs}"
        )


# importlib.reload() re-runs this file in the same namespace; the switch, the findings and the wrappers in
# place are kept, or the wrappers could never be taken off again.
_lock = globals().get("_lock") or threading.Lock()  # guards _findings only
# None: follow TRT_COMPAT_AUDIT; else the audits switched on from Python (enable() / disable() / auditing()).
_api_switch: Optional[FrozenSet[str]] = globals().get("_api_switch")
_findings: List[Any] = globals().get("_findings", [])
# The recorded changes of the wrappers in place (at most one set): undoing them restores the originals.
_installed: List[Any] = globals().get("_installed", [])


# -- switching ----------------------------------------------------------------------------------------------
def _read_environment() -> Tuple[FrozenSet[str], Tuple[str, ...], str]:
    """What TRT_COMPAT_AUDIT says: the audits it switches on, the words it understood, and the problem ("" if none).

    A word not understood is ignored. It never switches an audit on: a typo of one audit must not run another
    (``value`` is not the metadata audit), and an audit nobody asked for slows every compile and, in strict mode,
    raises out of passes. The rest of the list still counts.
    """
    raw = os.environ.get(ENV, "").strip()
    found, understood, unknown = set(), [], []
    for word in (part.strip().lower() for part in raw.split(",")):
        if not word:
            continue
        if word in ON or word == METADATA:
            found.add(METADATA)
        elif word == VALUES:
            found.add(VALUES)
        elif word == ALL:
            found.update(MODES)
        elif word not in OFF:
            unknown.append(word)
            continue
        understood.append(word)
    problem = ""
    if unknown:
        audits = "+".join(m for m in MODES if m in found) or "none"
        problem = (
            f"{ENV}={raw!r}: {', '.join(map(repr, unknown))} is not an audit (accepted: {ACCEPTED}); ignored, "
            f"audits on: {audits}"
        )
    return frozenset(found), tuple(understood), problem


def environment_problem() -> str:
    """What in TRT_COMPAT_AUDIT cannot be understood, with the accepted values; "" when all of it can."""
    return _read_environment()[2]


def modes() -> FrozenSet[str]:
    """The audits switched on: a subset of {"metadata", "values"}."""
    if _api_switch is not None:
        return _api_switch
    found, _, problem = _read_environment()
    if problem:
        warn_once([problem])
    return found


def is_enabled() -> bool:
    return bool(modes())


def mode() -> str:
    """ "off", "metadata", "values" or "metadata+values" (for the report)."""
    return "+".join(m for m in MODES if m in modes()) or "off"


def mode_source() -> str:
    """Where the audits in force come from: "python", "environment", or "default" (also when nothing in
    TRT_COMPAT_AUDIT is understood)."""
    if _api_switch is not None:
        return "python"
    return "environment" if _read_environment()[1] else "default"


def _checked(which: Tuple[str, ...]) -> FrozenSet[str]:
    chosen = frozenset(which or (METADATA,))
    unknown = sorted(chosen - set(MODES))
    if unknown:
        raise ValueError(f"unknown audit(s) {', '.join(map(repr, unknown))}; choose from {', '.join(MODES)}")
    return chosen


def enable(*which: str) -> None:
    """Audit every pass from now on (at once if torch_tensorrt is imported, else on its import).

    ``which``: "metadata" (the default), "values", or both.
    """
    global _api_switch
    chosen = _checked(which)
    _await_torch_tensorrt()
    with LOCK:
        _api_switch = chosen
        sync()


def disable() -> None:
    """Stop auditing and put every original pass and function back (the same objects)."""
    global _api_switch
    with LOCK:
        _api_switch = frozenset()
        uninstall()


@contextlib.contextmanager
def auditing(*which: str) -> Iterator[List[Any]]:
    """Audit inside the block (``which`` as for :func:`enable`); yields the list that collects its findings."""
    global _api_switch
    chosen = _checked(which)
    _await_torch_tensorrt()
    with LOCK:
        previous = _api_switch
        start = len(_findings)
        _api_switch = chosen
        sync()
    collected: List[Any] = []
    try:
        yield collected
    finally:
        with LOCK:
            collected.extend(_findings[start:])
            _api_switch = previous
            sync()


def findings() -> List[Any]:
    """Every finding so far (:class:`Finding` and :class:`ValueFinding`), in the order found."""
    with _lock:
        return list(_findings)


def clear() -> None:
    with _lock:
        del _findings[:]


def _await_torch_tensorrt() -> None:
    """Wait for another thread's ``import torch_tensorrt`` to finish, holding no lock of ours.

    Wrapping the passes imports torch_tensorrt submodules; doing that under trt_compat's lock while another
    thread's import (whose hook needs that lock) is half-way would deadlock. Outside an import this is a
    dictionary lookup.
    """
    if sys.modules.get("torch_tensorrt") is not None:
        try:
            import torch_tensorrt  # noqa: F401
        except Exception:  # that import failed for its own reasons; sync() then finds nothing to wrap
            pass


# -- installing ---------------------------------------------------------------------------------------------
def sync() -> None:
    """Wrap the passes if an audit is on and torch_tensorrt is imported; unwrap them otherwise.

    Called by the engine after it applies patches, so the audit always wraps the final pass list and functions
    (trt_compat's replacements included) and the patches never find an audit wrapper where they look for their
    own targets. Never raises outside strict mode.
    """
    with LOCK:
        uninstall()
        active = modes()
        if not active or sys.modules.get("torch_tensorrt") is None:
            return
        try:
            _install(active)
        except Exception as exc:
            uninstall()
            logger.warning("trt_compat audit: cannot wrap the graph passes: %s: %s", type(exc).__name__, exc)
            if read_config().strict:
                raise AuditError(f"trt_compat (strict mode): audit cannot wrap the graph passes: {exc}") from exc


def _install(active: FrozenSet[str]) -> None:
    from .patching import Changes, pass_list, post_lowering_passes

    changes = Changes()
    _installed.append(changes)
    manager = post_lowering_passes()
    for entry in pass_list(manager):
        changes.replace_pass(manager, entry, _audited(entry, active, POST_LOWERING))
    backends = importlib.import_module(BACKENDS_MODULE)
    if callable(getattr(backends, BACKEND_ENTRY, None)):
        changes.wrap_function(backends, BACKEND_ENTRY, _no_silent_fallback)
    if VALUES in active:
        for name, phase in backend_passes(backends):
            changes.wrap_function(backends, name, _values_wrapper(name, phase))
        if callable(getattr(backends, AOT_TRACER, None)):
            changes.wrap_function(backends, AOT_TRACER, _values_wrapper(AOT_TRACER, AOT))


def uninstall() -> List[str]:
    """Put every wrapped pass's original back where its wrapper is now; notes on wrappers no longer found."""
    notes = []
    with LOCK:
        while _installed:
            notes += [f"audit: {note}" for note in _installed.pop().undo_all()]
    for note in notes:
        logger.warning("trt_compat %s", note)
    return notes


def _audited(original: Callable, active: FrozenSet[str] = frozenset({METADATA}), phase: str = "") -> Callable:
    """``original`` wrapped in the audits ``active``; the wrapper has its name and ``__wrapped__``."""
    name = getattr(original, "__name__", None) or repr(original)

    @functools.wraps(original)
    def audited(gm: Any, *args: Any, **kwargs: Any) -> Any:
        return _run_audited(original, name, phase or POST_LOWERING, active, (gm,) + args, kwargs)

    audited.__wrapped__ = original  # functools.wraps sets it too; the undo relies on it
    return audited


def _values_wrapper(name: str, phase: str) -> Callable:
    def wrapper(original: Callable, _instance: Any, args: tuple, kwargs: dict) -> Any:
        return _run_audited(original, name, phase, frozenset({VALUES}), args, kwargs)

    return wrapper


def _run_audited(original: Callable, name: str, phase: str, active: FrozenSet[str], args: tuple, kwargs: dict) -> Any:
    gm = args[0] if args else kwargs.get("gm")
    before_metadata = _safe_mismatches(gm, name) if METADATA in active else None
    before_values = _safe_values(gm, name, args[1:], phase) if VALUES in active else None
    out = original(*args, **kwargs)
    after_gm = out if _is_graph_module(out) else gm
    if before_metadata is not None:
        after = _safe_mismatches(after_gm, name)
        if after is not None:
            known = set(before_metadata)
            _record(name, [m for m in after if m not in known])
    if before_values is not None:
        _record_values(_safe_judge(before_values, after_gm, name, args[1:]))
    return out


def _is_graph_module(value: Any) -> bool:
    fx = sys.modules.get("torch.fx")
    return fx is not None and isinstance(value, fx.GraphModule)


def _keep(found: List[Any]) -> None:
    with _lock:
        _findings.extend(found[: max(0, MAX_FINDINGS - len(_findings))])


def _record(pass_name: str, new: List[Mismatch]) -> None:
    if not new:
        return
    found = [Finding(pass_name, m.node, m.op, m.recorded, m.propagated) for m in new]
    _keep(found)
    more = f" (and {len(found) - 1} more node(s))" if len(found) > 1 else ""
    logger.warning("trt_compat audit: %s%s", found[0], more)
    if read_config().strict:
        _raise_strict(AuditError(f"trt_compat (strict mode): {found[0]}{more}"))


def _record_values(found: Optional[ValueFinding]) -> None:
    if found is None:
        return
    _keep([found])
    logger.warning("trt_compat audit: %s", found)
    if read_config().strict:
        _raise_strict(AuditError(f"trt_compat (strict mode): {found}"))


def _raise_strict(error: AuditError) -> None:
    """Raise ``error`` from the pass, and remember it: the torch.compile backend catches every RuntimeError of its
    passes and runs the graph in PyTorch instead, which must not turn a strict finding into a silent fallback."""
    _strict_errors.raised = error
    raise error


# The strict finding raised in this thread during the current torch.compile backend call (see _no_silent_fallback).
_strict_errors = threading.local()


def _no_silent_fallback(original: Callable, _instance: Any, args: tuple, kwargs: dict) -> Any:
    """Run the backend; raise again a strict finding its own error handling swallowed (it fell back to PyTorch)."""
    _strict_errors.raised = None
    try:
        result = original(*args, **kwargs)
    finally:
        raised, _strict_errors.raised = _strict_errors.raised, None
    if raised is not None:
        raise raised
    return result


# -- metadata: checking -------------------------------------------------------------------------------------
# Last result per graph module, with the graph's signature: consecutive passes hand the same module along, so
# the check after one pass is the check before the next unless something changed in between.
_cache: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _signature(gm: Any) -> tuple:
    # Node ids and names, not nodes: the cached value must not keep the graph (and so its key) alive.
    return tuple(
        (
            id(node),
            node.name,
            node.op,
            str(node.target),
            str(node.args),
            str(node.kwargs),
            id(node.meta),
            id(node.meta.get("val")),
        )
        for node in gm.graph.nodes
    )


def _safe_mismatches(gm: Any, pass_name: str) -> Optional[List[Mismatch]]:
    """mismatches(gm), or None when the audit itself cannot check this graph (never the user's problem)."""
    if not _is_graph_module(gm):
        return None
    try:
        signature = _signature(gm)
        cached = _cache.get(gm)
        if cached is not None and cached[0] == signature:
            return cached[1]
        result = mismatches(gm)
        _cache[gm] = (signature, result)
        return result
    except Exception as exc:
        logger.warning(
            "trt_compat audit: could not check the graph around pass '%s': %s: %s", pass_name, type(exc).__name__, exc
        )
        return None


def mismatches(gm: Any) -> List[Mismatch]:
    """Nodes of ``gm`` whose ``meta['val']`` disagrees with fake propagation from its inputs' ``meta['val']``.

    Compares structure (tensor / tuple / missing), shape and dtype. A node on which propagation fails is
    reported (with the error) and ends the comparison, since everything after it is unknown. Returns [] when
    the inputs carry no fake values to propagate from.
    """
    import torch
    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import FakeTensor
    from torch.utils._pytree import tree_leaves, tree_map

    from trt_compat._fake import running_on_fake

    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    inputs = [node.meta.get("val") for node in placeholders]
    mode = detect_fake_mode([leaf for leaf in tree_leaves(inputs) if isinstance(leaf, FakeTensor)])
    if mode is None:
        return []

    def fake(value: Any) -> Any:
        return tree_map(
            lambda leaf: (
                mode.from_tensor(leaf, static_shapes=True)
                if isinstance(leaf, torch.Tensor) and not isinstance(leaf, FakeTensor)
                else leaf
            ),
            value,
        )

    class Propagation(torch.fx.Interpreter):
        def run_node(self, node: Any) -> Any:
            with running_on_fake(mode):
                return super().run_node(node)

        def get_attr(self, target: Any, args: Any, kwargs: Any) -> Any:
            return fake(super().get_attr(target, args, kwargs))

    interpreter = Propagation(gm, garbage_collect_values=False)
    found = []
    failure = None
    try:
        interpreter.run(*fake(inputs), enable_io_processing=False)
    except Exception as exc:  # the node being run is the last one without a value
        failure = exc
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node not in interpreter.env:
            if failure is not None:
                found.append(
                    Mismatch(
                        node.name,
                        op_name(node),
                        describe_value(_recorded(node)),
                        f"an error ({type(failure).__name__}: {str(failure).splitlines()[0][:200]})",
                    )
                )
            break
        recorded, fresh = _recorded(node), interpreter.env[node]
        if not _agrees(recorded, fresh):
            found.append(Mismatch(node.name, op_name(node), describe_value(recorded), describe_value(fresh)))
    return found


def _recorded(node: Any) -> Any:
    meta = node.meta
    if "val" in meta:
        return meta["val"]
    return meta.get("tensor_meta", MISSING)


def _tensor_signature(value: Any) -> Optional[tuple]:
    """(shape as text, dtype) of a tensor or a TensorMetadata; None for anything else."""
    import torch
    from torch.fx.passes.shape_prop import TensorMetadata

    if isinstance(value, (torch.Tensor, TensorMetadata)):
        # Symbolic sizes compare by expression text, which adds no guards.
        return tuple(str(size) for size in value.shape), value.dtype
    return None


def _agrees(recorded: Any, fresh: Any) -> bool:
    fresh_signature = _tensor_signature(fresh)
    if fresh_signature is not None:
        return _tensor_signature(recorded) == fresh_signature
    if isinstance(fresh, (tuple, list)):
        if any(_tensor_signature(leaf) is not None for leaf in fresh):
            return (
                isinstance(recorded, (tuple, list))
                and len(recorded) == len(fresh)
                and all(_agrees(r, f) for r, f in zip(recorded, fresh))
            )
    # Scalars, SymInts and None carry no tensor description that later passes rely on.
    return True


# -- values: which passes --------------------------------------------------------------------------------------
PRE_AOT = "pre-AOT"
AOT = "AOT tracing"
POST_AOT = "post-AOT"
POST_LOWERING = "post-lowering"
# The backend traces the Dynamo graph to ATen with Torch-TensorRT's decompositions through this function, imported
# into the backends module by name; judged like a pass, with its inputs matched by position (it renames them).
AOT_TRACER = "aot_export_joint_simple"
BACKENDS_MODULE = "torch_tensorrt.dynamo.backend.backends"
# The torch.compile backend's function that runs the passes, and falls back to PyTorch when one raises.
BACKEND_ENTRY = "_pretraced_backend"

# Functions _pretraced_backend calls that take a graph module first but are no graph pass to judge.
NOT_JUDGED = {
    "post_lowering": "runs the post-lowering pass manager, whose passes are judged one by one",
    "_strip_trt_sdpa_kwargs": "tidies the partitioned module after compile_module, past partitioning",
}


def backend_passes(backends: Any) -> List[Tuple[str, str]]:
    """(name, phase) of each graph pass ``backends._pretraced_backend`` calls, as it looks them up in its module.

    Read from the release's code rather than listed here: the functions it names that live in Torch-TensorRT's
    lowering package or in the backends module itself and take a graph module (``gm``) first, less
    :data:`NOT_JUDGED`. They are imported into the backends module by name, so that is where they are wrapped. The
    phase is PRE_AOT for those it names before the AOT tracer, POST_AOT after it (2.12+ removes SymInt inputs
    after tracing).
    """
    import inspect

    backend = inspect.unwrap(getattr(backends, "_pretraced_backend", None) or (lambda: None))
    names = list(getattr(getattr(backend, "__code__", None), "co_names", ()))
    traced_at = names.index(AOT_TRACER) if AOT_TRACER in names else len(names)
    found: List[Tuple[str, str]] = []
    for position, name in enumerate(names):
        if name in NOT_JUDGED or not callable(getattr(backends, name, None)):
            continue
        function = inspect.unwrap(getattr(backends, name))
        if not inspect.isfunction(function):
            continue
        home = getattr(function, "__module__", "") or ""
        if not (home.startswith("torch_tensorrt.dynamo.lowering") or home == backends.__name__):
            continue
        try:
            parameters = list(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            continue
        if parameters[:1] == ["gm"]:
            found.append((name, PRE_AOT if position < traced_at else POST_AOT))
    return found


# -- values: inputs ---------------------------------------------------------------------------------------------
REAL = "the compile's real inputs"
SPECIAL = "generated inputs with NaN, +-inf, ties and -0.0"
FINITE = "generated finite inputs"


class Tolerance(NamedTuple):
    """``actual`` is close to ``expected`` where ``|actual - expected| <= atol * max|expected| + rtol * |expected|``
    element by element (the largest finite magnitude scales ``atol``: rounding is relative to the values a graph
    computes); NaN must stay NaN and infinities must stay the same infinities."""

    atol: float
    rtol: float
    why: str
    # False: not compared on the input set with NaN and infinities, where such a step may legitimately differ.
    with_special_values: bool = True


# Steps meant to change numerics, with the tolerance their results are compared with; every other pass must keep
# every bit. Measured in compat/DIFFERENTIAL.md (which attributes bit for bit, without this table).
TOLERANCES: Dict[str, Tolerance] = {
    AOT_TRACER: Tolerance(
        atol=1e-5,
        rtol=1e-5,
        why=(
            "AOT tracing applies Torch-TensorRT's decompositions, which replace fused kernels by elementary ops "
            "(silu -> x * sigmoid(x), upsample_bilinear2d -> gathers and a weighted sum, log_softmax, var, addcmul, "
            "lerp): the same function, rounded at every step, so the last bits differ from eager (measured up to "
            "4.8e-7 on single ops of magnitude 1, 1.9e-6 through fcn_resnet50). At infinities the rearranged "
            "arithmetic may give NaN where the fused kernel gives inf (0 * inf), so the input set with NaN and "
            "infinities is not compared; a decomposition that is wrong for finite numbers still is."
        ),
        with_special_values=False,
    ),
}


class _CannotRun(Exception):
    """The graph cannot be run on this input set (not a finding: the pass is not judged on it)."""


@dataclass
class _Slot:
    """One graph input: its name, the real value if the compile has one, and whether it is model state."""

    name: str
    example: Any  # the fake value (or real one) generated values follow
    real: Any = None
    state: bool = False  # a parameter or buffer: keeps its real value in every draw


@dataclass
class _Draw:
    kind: str
    # One per graph input, in order; the compile's real tensors by weak reference (the draws outlive the compile in
    # _recent_draws, and the audit must not keep a model's tensors alive).
    stored: List[Any]

    @property
    def values(self) -> List[Any]:
        values = [value() if isinstance(value, weakref.ref) else value for value in self.stored]
        if any(value is None and isinstance(kept, weakref.ref) for value, kept in zip(values, self.stored)):
            raise _CannotRun("a real input of the compile no longer exists")
        return values


# The real tensors of the last Dynamo graph judged in this thread: the post-lowering graph of the same compile has
# no reference to them (weak references: the audit must not keep a model's tensors alive).
_thread = threading.local()


def _fake_example(node: Any) -> Any:
    meta = node.meta
    for key in ("val", "example_value"):
        if meta.get(key) is not None:
            return meta[key]
    return None


def _grapharg(node: Any) -> Tuple[Any, bool]:
    """(real value, is model state) of a Dynamo placeholder, from the reference Dynamo keeps; (None, False)."""
    import torch

    argument = node.meta.get("grapharg")
    if argument is None:
        return None, False
    try:
        real = argument.example
    except Exception:  # the weak reference died, or Dynamo changed its GraphArg
        return None, False
    if getattr(argument, "pass_arg_as_tensor", False) and not isinstance(real, torch.Tensor):
        real = torch.as_tensor(real)
    if _is_fake(real):
        return None, False
    if isinstance(real, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        # A dynamic size Dynamo passes as an input: its number, never the symbol. Computing with the symbol would
        # add guards to the compile's shape environment and specialize the dynamic dimension (mark_dynamic then
        # fails the compile with a ConstraintViolationError).
        return _concrete(real), False
    return real, isinstance(real, torch.nn.Parameter) or _from_module(getattr(argument, "source", None))


def _from_module(source: Any) -> bool:
    """Whether Dynamo read this input from an ``nn.Module`` (a parameter, buffer or tensor attribute): model state,
    which a compiled graph may treat as constant, unlike the call's own inputs."""
    guard_source = getattr(source, "guard_source", None)
    if callable(guard_source):  # a method on older torch, a property on newer
        guard_source = guard_source()
    return any(
        callable(getattr(guard_source, test, None)) and getattr(guard_source, test)()
        for test in ("is_specialized_nn_module", "is_unspecialized_nn_module")
    )


def _is_fake(value: Any) -> bool:
    fake_tensor = sys.modules.get("torch._subclasses.fake_tensor")
    return fake_tensor is not None and isinstance(value, fake_tensor.FakeTensor)


def _concrete_shape(value: Any) -> Optional[Tuple[int, ...]]:
    sizes = []
    for size in value.shape:
        concrete = _concrete(size)
        if concrete is None:
            return None
        sizes.append(concrete)
    return tuple(sizes)


def _concrete(value: Any) -> Any:
    """A Python number for a number or a backed symbolic one (its hint); None when it has no known value."""
    if isinstance(value, (bool, int, float)):
        return value
    node = getattr(value, "node", None)
    hint = getattr(node, "hint", None)
    if hint is not None:
        return hint
    return None


def _matches(real: Any, example: Any) -> bool:
    import torch

    if not (isinstance(real, torch.Tensor) and isinstance(example, torch.Tensor)):
        return False
    return tuple(real.shape) == _concrete_shape(example) and real.dtype == example.dtype


def _slots(gm: Any, pass_args: tuple) -> List[_Slot]:
    """The graph's inputs with the real values the compile has for them: Dynamo's references, else a sample-input
    list the pass received (2.2-2.4 hand the post-lowering passes theirs), else this thread's last Dynamo graph."""
    import torch

    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    slots = [_Slot(node.name, _fake_example(node)) for node in placeholders]
    from_dynamo = False
    for slot, node in zip(slots, placeholders):
        slot.real, slot.state = _grapharg(node)
        from_dynamo = from_dynamo or slot.real is not None
        if slot.example is None:
            slot.example = slot.real
    if from_dynamo:
        _thread.last = [
            (weakref.ref(s.real), s.state) for s in slots if isinstance(s.real, torch.Tensor) and not _is_fake(s.real)
        ]
        return slots
    tensor_slots = [slot for slot in slots if isinstance(slot.example, torch.Tensor)]
    for candidates in _candidates(pass_args):
        if len(candidates) == len(tensor_slots) and all(
            _matches(value, slot.example) for (value, _), slot in zip(candidates, tensor_slots)
        ):
            for slot, (real, state) in zip(tensor_slots, candidates):
                slot.real, slot.state = real, state
            break
    return slots


def _candidates(pass_args: tuple) -> Iterator[List[Tuple[Any, bool]]]:
    """Real tensors that may be the graph's inputs: a list of them among the pass's arguments, then this thread's
    last Dynamo graph's (the same compile's, if their shapes and dtypes match the graph's inputs)."""
    import torch

    last = [(ref(), state) for ref, state in getattr(_thread, "last", ())]
    state_of = {id(value): state for value, state in last if value is not None}
    for arg in pass_args:
        if isinstance(arg, (list, tuple)) and any(isinstance(value, torch.Tensor) for value in arg):
            yield [
                (value, state_of.get(id(value), False))
                for value in arg
                if isinstance(value, torch.Tensor) and not _is_fake(value)
            ]
    if all(value is not None for value, _ in last):
        yield last


def _recipe(slots: List[_Slot]) -> tuple:
    """What the input sets of a graph are made of, input by input: the real values by identity and version, the
    generated ones by shape and dtype (the same recipe gives the same numbers, whatever the inputs are called)."""
    return tuple(
        (
            slot.state,
            id(slot.real),
            getattr(slot.real, "_version", None),
            _spec(slot.example),
        )
        for slot in slots
    )


def _spec(example: Any) -> tuple:
    """What a generated value is made from: the concrete shape and the dtype of a tensor, else the number."""
    import torch

    if isinstance(example, torch.Tensor):
        return _concrete_shape(example), example.dtype, example.device.type
    return (repr(_concrete(example)),)


# The input sets of the last graphs judged, by recipe: the graph after a pass usually has the same inputs, and
# generating a model's worth of inputs again for every pass would cost more than running it.
_recent_draws: Dict[tuple, List[_Draw]] = {}
_RECENT = 2


def _draws(slots: List[_Slot], recipe: tuple) -> List[_Draw]:
    """The input sets a pass is judged on: the real inputs (where the graph has any), then two generated draws
    for every input that is not model state with a real value."""
    cached = _recent_draws.get(recipe)
    # A recipe names real tensors by id(), which Python reuses once a tensor is freed: cached draws count only
    # while they still hold these very tensors.
    if cached is not None and all(_holds_real(draw, slots) for draw in cached):
        return cached
    draws = []
    if any(slot.real is not None for slot in slots):
        draws.append(
            _Draw(REAL, [_real(s) if s.real is not None else _generated(s, i, 0, True) for i, s in enumerate(slots)])
        )
    if any(not (slot.state and slot.real is not None) for slot in slots):
        for number, (kind, special) in enumerate(((SPECIAL, True), (FINITE, False)), start=1):
            values = [
                _real(s) if s.state and s.real is not None else _generated(s, i, number, special)
                for i, s in enumerate(slots)
            ]
            draws.append(_Draw(kind, values))
    while len(_recent_draws) >= _RECENT:
        del _recent_draws[next(iter(_recent_draws))]
    _recent_draws[recipe] = draws
    return draws


def _holds_real(draw: _Draw, slots: List[_Slot]) -> bool:
    return all(not isinstance(stored, weakref.ref) or stored() is slot.real for stored, slot in zip(draw.stored, slots))


def _real(slot: _Slot) -> Any:
    import torch

    return weakref.ref(slot.real) if isinstance(slot.real, torch.Tensor) else slot.real


def _generated(slot: _Slot, position: int, draw: int, special: bool) -> Any:
    """A value like ``slot.example``, the same for the same position, draw, shape and dtype every time."""
    import torch

    example = slot.example
    if not isinstance(example, torch.Tensor):
        concrete = _concrete(example)
        if concrete is None and example is not None:
            raise _CannotRun(f"input '{slot.name}' is {type(example).__name__} without a known value")
        return concrete
    shape = _concrete_shape(example)
    if shape is None:
        raise _CannotRun(f"input '{slot.name}' has a size without a known value")
    generator = torch.Generator().manual_seed(1_000_003 * position + 7_919 * draw + 17)
    count = 1
    for size in shape:
        count *= size
    dtype = example.dtype
    if dtype == torch.bool:
        flat = torch.rand(count, generator=generator) < 0.5
    elif dtype.is_floating_point or dtype.is_complex:
        # Multiples of 0.25: ties for max, sort and rounding, and zeros of both signs.
        flat = (torch.randn(count, generator=generator) * 4).round() / 4
        specials = [0.0, -0.0] + ([float("nan"), float("inf"), float("-inf")] if special else [])
        if special:
            pick = torch.rand(count, generator=generator)
            flat[pick < 0.04] = float("nan")
            flat[(pick >= 0.04) & (pick < 0.06)] = float("inf")
            flat[(pick >= 0.06) & (pick < 0.08)] = float("-inf")
            flat[(pick >= 0.08) & (pick < 0.12)] = -0.0
        # Each special value at least once, where the tensor is large enough (distinct places in small tensors).
        if count <= 4096:
            places = torch.randperm(count, generator=generator)[: len(specials)]
        else:
            places = torch.randint(0, count, (len(specials),), generator=generator)
        for place, number in zip(places.tolist(), specials):
            flat[place] = number
    elif dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        # Small and non-negative: integer inputs are often indices.
        flat = torch.randint(0, 3, (count,), generator=generator)
    else:
        raise _CannotRun(f"input '{slot.name}' has dtype {dtype}, which the audit does not generate")
    device = example.device if example.device.type != "meta" else torch.device("cpu")
    return flat.to(dtype).reshape(shape).to(device)


# -- values: running and comparing --------------------------------------------------------------------------------
@dataclass
class _Run:
    """One run of a graph on one input set: its outputs, and the final contents of what it wrote."""

    outputs: List[Any] = field(default_factory=list)
    output_nodes: List[Tuple[str, str]] = field(default_factory=list)  # (node name, op) per output leaf
    written: Dict[str, Any] = field(default_factory=dict)  # input or attribute name -> its final contents
    originals: Dict[str, Any] = field(default_factory=dict)  # attribute name -> its value before the run
    error: Optional[str] = None  # the graph raised (the original graph: not judged; after the pass: a finding)


def _copy(value: Any) -> Any:
    """A copy the graph may write, which computes what ``value`` computes: it keeps ``requires_grad``, since some
    ops choose their kernel by it even under no_grad (``matmul`` folds batches into one ``mm`` only when neither
    operand requires grad), and the last bits of the result with it."""
    import torch

    if not isinstance(value, torch.Tensor):
        return value
    copied = value.detach().clone()
    return copied.requires_grad_() if value.requires_grad else copied


@contextlib.contextmanager
def _real_tensors() -> Iterator[None]:
    """Compute on real tensors, whatever the pass runs under: the torch.compile backend lowers in its fake mode,
    which would turn every tensor the audit makes into a fake one."""
    import torch
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), torch.no_grad():
        yield


@contextlib.contextmanager
def _same_random_numbers() -> Iterator[None]:
    """Random ops in the graph draw the same numbers before and after the pass; the program's own generator is
    left as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _run_graph(gm: Any, values: List[Any]) -> _Run:
    """Run ``gm``'s graph (not its generated code: a pass may leave it stale) on copies of ``values`` (one per
    input) and of its parameters and buffers, so the model and the input set are never written."""
    import torch
    from torch.utils._pytree import tree_flatten

    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    if len(values) != len(placeholders):
        raise _CannotRun(f"the graph has {len(placeholders)} inputs, the input set {len(values)}")
    inputs = {node.name: _copy(value) for node, value in zip(placeholders, values)}
    versions: Dict[str, Tuple[Any, int]] = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            versions[name] = (value, value._version)
    run = _Run()

    def state_copy(name: str, value: Any) -> Any:
        if name not in versions:
            if _is_fake(value):
                raise _CannotRun(f"attribute '{name}' is a fake tensor")
            copied = _copy(value)
            run.originals[name] = value
            versions[name] = (copied, copied._version)
        return versions[name][0]

    class Runner(torch.fx.Interpreter):
        def get_attr(self, target: Any, args: Any, kwargs: Any) -> Any:
            value = super().get_attr(target, args, kwargs)
            return state_copy(str(target), value) if isinstance(value, torch.Tensor) else value

        def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
            module = self.fetch_attr(target)
            tensors = dict(module.named_parameters())
            tensors.update(module.named_buffers())
            swapped = {name: state_copy(f"{target}.{name}", value) for name, value in tensors.items()}
            return torch.func.functional_call(module, swapped, tuple(args), dict(kwargs))

    output_node = next(node for node in reversed(gm.graph.nodes) if node.op == "output")
    node_leaves, _ = tree_flatten(output_node.args[0])
    run.output_nodes = [
        (leaf.name, op_name(leaf)) if isinstance(leaf, torch.fx.Node) else (repr(leaf), "a constant")
        for leaf in node_leaves
    ]
    with _same_random_numbers():
        try:
            result = Runner(gm).run(*(inputs[node.name] for node in placeholders), enable_io_processing=False)
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
            return run
    run.outputs, _ = tree_flatten(result)
    run.written = {name: value for name, (value, version) in versions.items() if value._version != version}
    return run


def difference(actual: Any, expected: Any, tolerance: Optional[Tolerance] = None) -> Optional[Tuple[float, str]]:
    """None when ``actual`` equals ``expected`` (bit for bit, NaN equal to NaN, the sign of zero counting; or within
    ``tolerance``), else (largest absolute difference, what differs). Tensors or Python scalars."""
    import math

    import torch

    if isinstance(actual, torch.Tensor) != isinstance(expected, torch.Tensor):
        return math.inf, f"{describe_value(actual)} instead of {describe_value(expected)}"
    if not isinstance(actual, torch.Tensor):
        if isinstance(actual, float) and isinstance(expected, float):
            same = (actual == expected and math.copysign(1, actual) == math.copysign(1, expected)) or (
                math.isnan(actual) and math.isnan(expected)
            )
        else:
            same = type(actual) is type(expected) and actual == expected
        return None if same else (math.inf, f"{actual!r} instead of {expected!r}")
    a, b = actual.detach().cpu(), expected.detach().cpu()
    if a.shape != b.shape or a.dtype != b.dtype:
        return math.inf, f"{describe_value(a)} instead of {describe_value(b)}"
    if not (a.is_floating_point() or a.is_complex()):
        if torch.equal(a, b):
            return None
        largest = (a.to(torch.int64) - b.to(torch.int64)).abs().max().item() if a.numel() else 0
        return float(largest), f"{int((a != b).sum())} of {a.numel()} elements differ"
    both_nan = a.isnan() & b.isnan()
    equal = (a == b) | both_nan
    if not a.is_complex():
        equal &= (torch.signbit(a) == torch.signbit(b)) | both_nan
    if bool(equal.all()):
        return None
    if tolerance is not None and _close(a, b, tolerance):
        return None
    gap = (a.to(torch.complex128 if a.is_complex() else torch.float64) - b).abs()
    gap = gap.masked_fill((a == b) | both_nan, 0).nan_to_num(nan=math.inf, posinf=math.inf)
    largest = gap.max().item()
    count = int((~equal).sum())
    if largest == 0:
        return 0.0, f"the sign of zero differs at {count} of {a.numel()} elements"
    return largest, f"{count} of {a.numel()} elements differ, by up to {largest:g}"


def _close(actual: Any, expected: Any, tolerance: Tolerance) -> bool:
    """Within ``tolerance``: NaN where NaN, the same infinities, and every finite difference at most
    ``atol * (largest finite |expected|) + rtol * |expected|``."""
    import torch

    finite = expected[expected.isfinite()]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    return torch.allclose(actual, expected, rtol=tolerance.rtol, atol=tolerance.atol * scale, equal_nan=True)


def _first_change(
    before: _Run,
    after: _Run,
    inputs: Dict[str, Any],
    tolerance: Optional[Tolerance],
    kept_outside: FrozenSet[str] = frozenset(),
) -> Optional[Tuple[str, str, str, float, str]]:
    """(what, node, op, difference, detail) of the first output, then input or attribute, that differs; ``inputs``
    are the input set's values by the names of the graph before the pass, as are the runs' written inputs. Inputs in
    ``kept_outside`` are not judged by what the graph writes into them: trt_compat writes them itself after each
    call, from the graph's outputs (see :data:`trt_compat.patching.WRITES_KEPT_OUTSIDE`), which are judged."""
    import math

    if after.error is not None:
        return "the graph", "", "", math.inf, f"raises {after.error} where it ran before the pass"
    if len(after.outputs) != len(before.outputs):
        return "the outputs", "", "", math.inf, f"{len(after.outputs)} values instead of {len(before.outputs)}"
    for index, (new, old) in enumerate(zip(after.outputs, before.outputs)):
        changed = difference(new, old, tolerance)
        if changed is not None:
            node, op = before.output_nodes[index] if index < len(before.output_nodes) else ("?", "?")
            return f"output {index}", node, op, changed[0], changed[1]
    written = list(before.written) + [name for name in after.written if name not in before.written]
    for name in (name for name in written if name not in kept_outside):
        original = inputs.get(name, before.originals.get(name, after.originals.get(name)))
        new, old = after.written.get(name, original), before.written.get(name, original)
        changed = difference(new, old, tolerance)
        if changed is not None:
            kind = "input" if name in inputs else "attribute"
            if name not in after.written:
                how = "no longer written"
            elif name not in before.written:
                how = "now written"
            else:
                how = "written differently"
            op = "a graph input" if kind == "input" else f"attribute '{name}'"
            return f"final contents of {kind} '{name}' ({how})", name, op, changed[0], changed[1]
    return None


# -- values: judging a pass -----------------------------------------------------------------------------------------
# Last runs per graph module, with its value signature and input recipe: the runs after one pass are the runs before
# the next unless something changed in between.
_value_cache: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


@dataclass
class _Before:
    gm: Any
    names: List[str]  # the graph's inputs
    signature: tuple
    recipe: tuple
    draws: List[_Draw]
    runs: List[_Run]
    phase: str


def _value_signature(gm: Any) -> tuple:
    """What the graph computes, as far as a pass can change it: its nodes, and the identity and version of the
    tensors it reads as attributes (constant folding replaces them; an in-place update bumps the version)."""
    entries = []
    for node in gm.graph.nodes:
        entry: tuple = (node.name, node.op, str(node.target), str(node.args), str(node.kwargs))
        if node.op == "get_attr":
            try:
                value = _attribute(gm, str(node.target))
            except AttributeError:
                value = None
            entry += (id(value), getattr(value, "_version", None))
        entries.append(entry)
    return tuple(entries)


def _attribute(gm: Any, target: str) -> Any:
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _cached_runs(gm: Any, signature: tuple, recipe: tuple) -> Optional[List[_Run]]:
    cached = _value_cache.get(gm)
    if cached is not None and cached[0] == signature and cached[1] == recipe:
        return cached[2]
    return None


def _safe_values(gm: Any, pass_name: str, pass_args: tuple, phase: str) -> Optional[_Before]:
    """The graph's runs before the pass, or None when the audit cannot judge it (never the user's problem)."""
    if not _is_graph_module(gm):
        return None
    try:
        with _real_tensors():
            return _values_before(gm, pass_name, pass_args, phase)
    except Exception as exc:
        logger.warning(
            "trt_compat audit: could not run the graph before pass '%s': %s: %s", pass_name, type(exc).__name__, exc
        )
        return None


def _values_before(gm: Any, pass_name: str, pass_args: tuple, phase: str) -> Optional[_Before]:
    slots = _slots(gm, pass_args)
    signature, recipe = _value_signature(gm), _recipe(slots)
    try:
        draws = _draws(slots, recipe)
    except _CannotRun as exc:
        logger.debug("trt_compat audit: pass '%s' not judged: %s", pass_name, exc)
        return None
    if not draws:
        return None
    runs = _cached_runs(gm, signature, recipe)
    if runs is None:
        runs = [_safe_run(gm, lambda draw=draw: draw.values) for draw in draws]
        _value_cache[gm] = (signature, recipe, runs)
    for run, draw in zip(runs, draws):
        if run.error is not None:
            logger.debug("trt_compat audit: pass '%s' not judged on %s: %s", pass_name, draw.kind, run.error)
    return _Before(gm, [slot.name for slot in slots], signature, recipe, draws, runs, phase)


def _safe_run(gm: Any, values: Callable[[], List[Any]]) -> _Run:
    try:
        return _run_graph(gm, values())
    except _CannotRun as exc:
        return _Run(error=f"cannot run: {exc}")


def _safe_judge(before: _Before, after_gm: Any, pass_name: str, pass_args: tuple) -> Optional[ValueFinding]:
    """The pass's first change to the graph's values, or None (also when the audit cannot tell)."""
    try:
        with _real_tensors():
            return _judge(before, after_gm, pass_name, pass_args)
    except Exception as exc:
        logger.warning(
            "trt_compat audit: could not judge the values of pass '%s': %s: %s", pass_name, type(exc).__name__, exc
        )
        return None


def _judge(before: _Before, after_gm: Any, pass_name: str, pass_args: tuple) -> Optional[ValueFinding]:
    signature = _value_signature(after_gm)
    if after_gm is before.gm and signature == before.signature:
        return None  # nothing that computes a value changed
    try:
        renamed = _renamed_inputs(before.gm, after_gm, before.phase)
    except _CannotRun as exc:
        logger.debug("trt_compat audit: pass '%s' not judged: %s", pass_name, exc)
        return None
    position = {name: index for index, name in enumerate(before.names)}
    tolerance = TOLERANCES.get(pass_name)
    runs = []
    for draw, old in zip(before.draws, before.runs):
        if old.error is not None:
            runs.append(_Run(error=old.error))
            continue
        new = _safe_run(after_gm, lambda draw=draw: [draw.values[position[was]] for was in renamed.values()])
        runs.append(new)
        if new.error is not None and new.error.startswith("cannot run: "):
            logger.debug("trt_compat audit: pass '%s' not judged on %s: %s", pass_name, draw.kind, new.error)
            continue
        if tolerance is not None and not tolerance.with_special_values and draw.kind == SPECIAL:
            continue  # run all the same: the next pass compares with it
        # Compared under the names of the graph before the pass (AOT tracing renames every input).
        compared = _Run(
            new.outputs,
            new.output_nodes,
            {renamed.get(n, n): v for n, v in new.written.items()},
            new.originals,
            new.error,
        )
        kept_outside = frozenset(getattr(before.gm, "meta", {}).get(WRITES_KEPT_OUTSIDE, ()))
        change = _first_change(old, compared, dict(zip(before.names, draw.values)), tolerance, kept_outside)
        if change is not None:
            what, node, op, difference, detail = change
            return ValueFinding(pass_name, before.phase, _release(), node, op, what, difference, detail, draw.kind)
    # The next pass compares with these runs, if it sees the same inputs (AOT tracing's graph usually does).
    recipe = before.recipe if after_gm is before.gm else _recipe(_slots(after_gm, pass_args))
    if recipe == before.recipe:
        _value_cache[after_gm] = (signature, recipe, runs)
    return None


def _renamed_inputs(before_gm: Any, after_gm: Any, phase: str) -> Dict[str, str]:
    """Each input of the graph after the pass -> the input of the graph before it that receives the same value:
    the same name (a pass may drop inputs, e.g. SymInts), or for AOT tracing, which renames them all, the same
    position."""
    before = [node.name for node in before_gm.graph.nodes if node.op == "placeholder"]
    after = [node.name for node in after_gm.graph.nodes if node.op == "placeholder"]
    if set(after) <= set(before):
        return {name: name for name in after}
    if phase == AOT and len(after) == len(before):
        return dict(zip(after, before))
    raise _CannotRun(f"the pass gave the graph new inputs {sorted(set(after) - set(before))}")


def _release() -> str:
    module = sys.modules.get("torch_tensorrt")
    return str(getattr(module, "__version__", "unknown"))

"""Metadata audit: find the lowering pass that made a node's ``meta['val']`` lie.

Torch-TensorRT trusts ``meta['val']`` all the way to partitioning and engine inputs, so a lowering pass that
leaves a wrong shape or a stale tuple there (#3221, #3185) surfaces much later, far from its cause. With the
audit on, every pass of the post-lowering pass manager (the list ``trt_compat._patching.post_lowering_passes``
finds, ``ATEN_POST_LOWERING_PASSES``) is wrapped: after it runs, the graph is re-propagated on fake tensors from
its inputs' ``meta['val']`` and every node whose recorded value disagrees (structure, shape or dtype) and did not
already disagree before that pass is reported, naming pass, node, op and both values.

    TRT_COMPAT_AUDIT=1 python app.py            # or, in Python:
    from trt_compat import audit
    with audit.auditing():
        torch_tensorrt.compile(...)
    audit.findings()                            # [Finding(pass_name=..., node=..., ...)], first broken first

Each finding is logged as a warning on the ``trt_compat`` logger; with ``TRT_COMPAT_STRICT=1`` the first one
raises :class:`AuditError` (a ``trt_compat.PatchError``) out of the lowering pass. Off by default and then free:
nothing is wrapped, and importing this module imports neither torch nor torch_tensorrt. The fake propagation
runs in the graph's own fake mode, so on dynamic shapes it may add guards to its shape environment, as any
re-trace would: audit is for diagnosing, not for production runs.
"""

import contextlib
import functools
import logging
import os
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional

from ._config import read_config, read_switch
from ._errors import PatchError
from ._state import LOCK
from .describe import MISSING, op_name
from .describe import value as describe_value

logger = logging.getLogger("trt_compat")

ENV = "TRT_COMPAT_AUDIT"
# Findings kept for findings(); a graph broken everywhere must not grow memory without bound.
MAX_FINDINGS = 1000


class AuditError(PatchError):
    """Strict mode: a lowering pass left a ``meta['val']`` that fake propagation contradicts."""


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


# importlib.reload() re-runs this file in the same namespace; the switch, the findings and the wrappers in
# place are kept, or the wrappers could never be taken off again.
_lock = globals().get("_lock") or threading.Lock()  # guards _findings only
_api_switch: Optional[bool] = globals().get("_api_switch")  # None: follow TRT_COMPAT_AUDIT; else enable()/disable()
_findings: List[Finding] = globals().get("_findings", [])
# The recorded pass-list changes of the wrappers in place (at most one set): undoing them restores the originals.
_installed: List[Any] = globals().get("_installed", [])


# -- switching ----------------------------------------------------------------------------------------------
def is_enabled() -> bool:
    if _api_switch is not None:
        return _api_switch
    return read_switch(ENV)[0]


def mode() -> str:
    """ "metadata" when the audit is on, else "off" (for the report)."""
    return "metadata" if is_enabled() else "off"


def mode_source() -> str:
    if _api_switch is not None:
        return "python"
    return "environment" if os.environ.get(ENV, "").strip() else "default"


def enable() -> None:
    """Audit every post-lowering pass from now on (at once if torch_tensorrt is imported, else on its import)."""
    global _api_switch
    _await_torch_tensorrt()
    with LOCK:
        _api_switch = True
        sync()


def disable() -> None:
    """Stop auditing and put every original pass back (the same objects)."""
    global _api_switch
    with LOCK:
        _api_switch = False
        uninstall()


@contextlib.contextmanager
def auditing() -> Iterator[List[Finding]]:
    """Audit inside the block; yields the list that collects the block's findings."""
    global _api_switch
    _await_torch_tensorrt()
    with LOCK:
        previous = _api_switch
        start = len(_findings)
        _api_switch = True
        sync()
    collected: List[Finding] = []
    try:
        yield collected
    finally:
        with LOCK:
            collected.extend(_findings[start:])
            _api_switch = previous
            sync()


def findings() -> List[Finding]:
    """Every finding so far, in the order found (the first is the first pass that broke a node)."""
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
    """Wrap the passes if the audit is on and torch_tensorrt is imported; unwrap them otherwise.

    Called by the engine after it applies patches, so the audit always wraps the final pass list (trt_compat's
    replacements included) and the patches never find an audit wrapper where they look for their own passes.
    Never raises outside strict mode.
    """
    with LOCK:
        uninstall()
        if not is_enabled() or sys.modules.get("torch_tensorrt") is None:
            return
        try:
            _install()
        except Exception as exc:
            uninstall()
            logger.warning("trt_compat audit: cannot wrap the lowering passes: %s: %s", type(exc).__name__, exc)
            if read_config().strict:
                raise AuditError(f"trt_compat (strict mode): audit cannot wrap the lowering passes: {exc}") from exc


def _install() -> None:
    from .patching import Changes, pass_list, post_lowering_passes

    changes = Changes()
    _installed.append(changes)
    manager = post_lowering_passes()
    for entry in pass_list(manager):
        changes.replace_pass(manager, entry, _audited(entry))


def uninstall() -> List[str]:
    """Put every wrapped pass's original back where its wrapper is now; notes on wrappers no longer found."""
    notes = []
    with LOCK:
        while _installed:
            notes += [f"audit: {note}" for note in _installed.pop().undo_all()]
    for note in notes:
        logger.warning("trt_compat %s", note)
    return notes


def _audited(original: Callable) -> Callable:
    name = getattr(original, "__name__", None) or repr(original)

    @functools.wraps(original)
    def audited(gm: Any, *args: Any, **kwargs: Any) -> Any:
        before = _safe_mismatches(gm, name)
        out = original(gm, *args, **kwargs)
        if before is not None:
            after = _safe_mismatches(out if _is_graph_module(out) else gm, name)
            if after is not None:
                known = set(before)
                _record(name, [m for m in after if m not in known])
        return out

    audited.__wrapped__ = original  # functools.wraps sets it too; the undo relies on it
    return audited


def _is_graph_module(value: Any) -> bool:
    fx = sys.modules.get("torch.fx")
    return fx is not None and isinstance(value, fx.GraphModule)


def _record(pass_name: str, new: List[Mismatch]) -> None:
    if not new:
        return
    found = [Finding(pass_name, m.node, m.op, m.recorded, m.propagated) for m in new]
    with _lock:
        _findings.extend(found[: max(0, MAX_FINDINGS - len(_findings))])
    more = f" (and {len(found) - 1} more node(s))" if len(found) > 1 else ""
    logger.warning("trt_compat audit: %s%s", found[0], more)
    if read_config().strict:
        raise AuditError(f"trt_compat (strict mode): {found[0]}{more}")


# -- checking -----------------------------------------------------------------------------------------------
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

"""Charging the CPU time of a compile to the patches whose installed objects run in it, from their undo logs.

Used by ``benchmarks/bench_patch_cost.py``; imports neither torch nor torch_tensorrt.
"""

from __future__ import annotations

import contextlib
import functools
import time
import types
from typing import Any, Callable, Dict, Iterator, List

from trt_compat.patching import Change

UPSTREAM = "upstream"


class Attribution:
    """Exclusive thread-CPU time and fake-tensor dispatches, charged to the innermost timed frame that is running."""

    def __init__(self) -> None:
        self.stack: List[List[Any]] = []  # [owner, CPU seconds spent in frames called from this one]
        self.seconds: Dict[str, float] = {}
        self.calls: Dict[str, int] = {}
        self.dispatches: Dict[str, int] = {}

    def owner(self) -> str:
        return self.stack[-1][0] if self.stack else UPSTREAM

    def frame(self, owner: str, function: Callable) -> Callable:
        """``function``, with its calls' exclusive CPU time charged to ``owner``."""
        stack, seconds, calls = self.stack, self.seconds, self.calls

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            stack.append([owner, 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - start
                _, inner = stack.pop()
                seconds[owner] = seconds.get(owner, 0.0) + elapsed - inner
                calls[owner] = calls.get(owner, 0) + 1
                if stack:
                    stack[-1][1] += elapsed

        return timed

    def count_dispatch(self) -> None:
        owner = self.owner()
        self.dispatches[owner] = self.dispatches.get(owner, 0) + 1


def _with_original_replaced(installed: Callable, original: Any, replacement: Callable) -> Callable:
    """A copy of the function ``installed`` whose closure holds ``replacement`` wherever it held ``original``.

    A patch's installed object calls its original through its closure (``PatchContext.wrap_function`` and
    ``wrap_item`` hand it to the patch's wrapper from there); one that holds no reference to it (a replacement
    pass) is returned as it is: it never calls the original.
    """
    cells = getattr(installed, "__closure__", None) or ()
    if original is None or not any(_holds(cell, original) for cell in cells):
        return installed
    closure = tuple(types.CellType(replacement) if _holds(cell, original) else cell for cell in cells)
    copy = types.FunctionType(
        installed.__code__, installed.__globals__, installed.__name__, installed.__defaults__, closure
    )
    copy.__kwdefaults__ = installed.__kwdefaults__
    copy.__dict__.update(installed.__dict__)
    copy.__qualname__ = installed.__qualname__
    return copy


def _holds(cell: Any, value: Any) -> bool:
    try:
        return cell.cell_contents is value
    except ValueError:  # an empty cell
        return False


@contextlib.contextmanager
def instrumented(attribution: Attribution, changes: Dict[str, List[Change]]) -> Iterator[None]:
    """Each object a patch installed (``changes``: the undo-log records by patch name, as
    ``PatchContext.records`` lists them) replaced in place by a timed copy whose call of the original it wraps is
    timed too; everything put back on exit. Time (and each ``count_dispatch``) inside a patch's object but outside
    its original is charged to the patch, inside the original to upstream; a replacement that holds no reference to
    an original (a lowering pass) is wholly its patch's; an original that is another patch's installed object is
    that patch's timed copy, so wrappers nested on one target each get their own share.
    """
    by_installed = {id(c.installed): (name, c) for name, records in changes.items() for c in records}

    def timed_copy(name: str, change: Any) -> Callable:
        inner = by_installed.get(id(change.original))
        # The original is another patch's installed object: its own timed copy, so that patch gets its share.
        original = timed_copy(*inner) if inner else change.original
        timed_original = attribution.frame(UPSTREAM, original) if callable(original) else original
        return attribution.frame(name, _with_original_replaced(change.installed, change.original, timed_original))

    wrapped_again = {id(c.original) for records in changes.values() for c in records}
    restore: List[Callable[[], None]] = []
    try:
        for name, records in changes.items():
            for change in records:
                if id(change.installed) in wrapped_again:
                    continue  # reached through the patch that wrapped it again
                restore.append(_put_in_place(change, timed_copy(name, change)))
        yield
    finally:
        for undo in reversed(restore):
            undo()


def _put_in_place(change: Any, replacement: Callable) -> Callable[[], None]:
    """Put ``replacement`` where ``change.installed`` is; returns what puts ``change.installed`` back."""
    if change.kind == "attribute":
        assert getattr(change.owner, change.name) is change.installed, change
        setattr(change.owner, change.name, replacement)
        return lambda: setattr(change.owner, change.name, change.installed)
    if change.kind == "item":
        assert change.owner[change.key] is change.installed, change
        change.owner[change.key] = replacement
        return lambda: change.owner.__setitem__(change.key, change.installed)
    assert change.kind == "pass", change
    manager = change.owner
    # A new list each time, as trt_compat itself does (a compile in flight keeps iterating its own list).
    manager.passes = [replacement if p is change.installed else p for p in manager.passes]
    return lambda: setattr(manager, "passes", [change.installed if p is replacement else p for p in manager.passes])


def frame_overhead_us(repeats: int = 20_000) -> float:
    """CPU microseconds one timed frame around a pass-through adds to its caller, nested as in a compile."""
    attribution = Attribution()
    inner = attribution.frame(UPSTREAM, lambda: None)
    outer = attribution.frame("probe", lambda: inner())
    start = time.thread_time()
    for _ in range(repeats):
        outer()
    total = time.thread_time() - start
    bare_start = time.thread_time()
    for _ in range(repeats):
        (lambda: (lambda: None)())()
    bare = time.thread_time() - bare_start
    return round((total - bare) / repeats * 1e6, 3)

"""benchmarks/attribution.py charges work to the patch whose installed object does it, from the undo logs alone.

Counted, not timed: each function below calls ``count_dispatch`` a known number of times, and every count must land
with the patch (or upstream) whose code made it. Patches are made here on plain objects (no Torch-TensorRT).
"""

import types

from benchmarks.attribution import UPSTREAM, Attribution, instrumented
from trt_compat.patching import Patch, PatchContext

attribution = Attribution()


def _patch(name):
    return PatchContext(Patch(name, "t", None, "2.2.0", None, "why"), (2, 5, 0))


def _counting(times, then=None):
    def work(*args, **kwargs):
        for _ in range(times):
            attribution.count_dispatch()
        return then(*args, **kwargs) if then else args

    return work


def _wrapper(times):
    def wrapper(wrapped, instance, args, kwargs):
        for _ in range(times):
            attribution.count_dispatch()
        return wrapped(*args, **kwargs)

    return wrapper


def test_nested_wrappers_each_get_their_own_share_and_upstream_its_own():
    upstream = types.SimpleNamespace(target=_counting(3), registry={"op": _counting(5)})

    class Manager:
        passes = [_counting(7)]

    inner, outer = _patch("inner"), _patch("outer")
    inner.wrap_function(upstream, "target", _wrapper(1))
    outer.wrap_function(upstream, "target", _wrapper(2))  # wraps inner's installed object
    inner.wrap_item(upstream.registry, "op", _wrapper(4), "registry")
    outer.replace_pass(Manager, Manager.passes[0], _counting(6))
    installed = (upstream.target, upstream.registry["op"], Manager.passes[0])
    changes = {"inner": inner.records, "outer": outer.records}

    attribution.dispatches.clear()
    with instrumented(attribution, changes):
        assert upstream.target("x") == ("x",)
        upstream.registry["op"]()
        Manager.passes[0]()
    assert attribution.dispatches == {"outer": 2 + 6, "inner": 1 + 4, UPSTREAM: 3 + 5}
    assert attribution.calls == {"outer": 2, "inner": 2, UPSTREAM: 3}  # the upstream frames of both wrappers
    # Everything is back in place, so the undo logs still undo exactly.
    assert (upstream.target, upstream.registry["op"], Manager.passes[0]) == installed
    assert not outer.undo_all() and not inner.undo_all()
    attribution.dispatches.clear()
    upstream.target()
    assert attribution.dispatches == {UPSTREAM: 3}

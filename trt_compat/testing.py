"""Helpers for patch authors: test a patch's ``apply`` without Torch-TensorRT, and check what it changed.

    import types
    from trt_compat import testing

    def test_my_patch_wraps_the_partitioner():
        stub = types.SimpleNamespace(construct_submodule_inputs=lambda module: [])
        with testing.stub_modules({"torch_tensorrt.dynamo.partitioning": stub}):
            with testing.applied(my_patch_module, release="2.5.0") as ctx:
                assert [c.name for c in ctx.records] == ["construct_submodule_inputs"]
            assert stub.construct_submodule_inputs is ...  # the original again

``applied`` runs the module's ``apply`` through a real :class:`trt_compat.patching.PatchContext` (bypassing the
version range, which is the engine's decision) and undoes it afterwards, failing if the undo was not exact.
``stub_post_lowering(passes)`` stands in for Torch-TensorRT's post-lowering pass manager.
"""

import contextlib
import sys
import types
from typing import Any, Callable, Dict, Iterator, List, Tuple

from .patching import PatchContext, parse_release

__all__ = ["applied", "stub_modules", "stub_post_lowering", "PassManagerStub"]

POST_LOWERING_MODULE = "torch_tensorrt.dynamo.lowering.passes._aten_lowering_pass"


@contextlib.contextmanager
def applied(module: Any, release: str = "2.5.0") -> Iterator[PatchContext]:
    """The patch ``module`` applied for the block (as on ``release``); yields its context, then undoes it."""
    context = PatchContext(module.PATCH, parse_release(release))
    try:
        module.apply(context)
    except BaseException:
        context.undo_all()
        raise
    try:
        yield context
    finally:
        notes = context.undo_all()
        if notes:
            raise AssertionError(f"{module.PATCH.name}: the undo was not exact: {notes}")


@contextlib.contextmanager
def stub_modules(modules: Dict[str, Any]) -> Iterator[None]:
    """Make each ``name -> object`` importable as a module for the block (parents are created as empty
    packages where missing); everything is put back afterwards."""
    saved = {}
    # A parent that is a real, already imported package gets the stand-in as an attribute too (``from parent import
    # child`` reads it there): that attribute is put back as well, or the real package would keep the stand-in.
    saved_attributes: List[Tuple[Any, str, Any]] = []
    wanted = dict(modules)
    for name in list(wanted):
        parts = name.split(".")
        for depth in range(1, len(parts)):
            wanted.setdefault(".".join(parts[:depth]), None)
    try:
        for name in sorted(wanted, key=lambda n: n.count(".")):
            saved[name] = sys.modules.get(name, _ABSENT)
            value = wanted[name]
            if value is None:
                if saved[name] is not _ABSENT:
                    continue
                value = types.ModuleType(name)
                value.__path__ = []
            sys.modules[name] = value
            parent, _, child = name.rpartition(".")
            if parent:
                saved_attributes.append((sys.modules[parent], child, vars(sys.modules[parent]).get(child, _ABSENT)))
                setattr(sys.modules[parent], child, value)
        yield
    finally:
        for module, child, previous in reversed(saved_attributes):
            if previous is _ABSENT:
                vars(module).pop(child, None)
            else:
                setattr(module, child, previous)
        for name, previous in saved.items():
            if previous is _ABSENT:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


_ABSENT = object()


class PassManagerStub:
    """What Torch-TensorRT's DynamoPassManager offers a patch: a ``passes`` list, run in order."""

    def __init__(self, passes: List[Callable]) -> None:
        self.passes = list(passes)

    def __call__(self, gm: Any, *args: Any) -> Any:
        for graph_pass in self.passes:  # iterates the list in place when the loop starts, as upstream does
            gm = graph_pass(gm, *args)
        return gm


@contextlib.contextmanager
def stub_post_lowering(passes: List[Callable]) -> Iterator[PassManagerStub]:
    """A stand-in post-lowering pass manager (ATEN_POST_LOWERING_PASSES) for the block."""
    manager = PassManagerStub(passes)
    module = types.ModuleType(POST_LOWERING_MODULE)
    module.ATEN_POST_LOWERING_PASSES = manager
    with stub_modules({POST_LOWERING_MODULE: module}):
        yield manager

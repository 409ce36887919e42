"""What a patch is, and the context it applies itself through.

A patch module under ``trt_compat/patches/`` defines two names:

* ``PATCH``: a :class:`Patch` saying what it fixes, the upstream issue, and the releases that need it;
* ``apply(ctx)``: checks that its targets exist with the expected shape (raising :class:`TargetChanged`
  otherwise), then changes Torch-TensorRT only through the ``ctx`` methods, which record how to undo each change.

If ``apply`` raises, every change it already made is undone, so a patch is either wholly in place or not at all.
"""
import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, List, Optional, Tuple

from ._errors import PatchError, TargetChanged  # noqa: F401  (part of this module's vocabulary)

logger = logging.getLogger("trt_compat")


def _parse_release(text: str) -> Tuple[int, ...]:
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (3 - len(parts))


@dataclass(frozen=True)
class Patch:
    name: str
    title: str
    issue: str
    first_affected: str
    """Oldest Torch-TensorRT release that needs the patch."""
    fixed_in: Optional[str]
    """First release where upstream no longer needs it; None while every release up to the newest needs it."""
    why: str

    def needed_on(self, release: Tuple[int, ...]) -> bool:
        if release < _parse_release(self.first_affected):
            return False
        return self.fixed_in is None or release < _parse_release(self.fixed_in)

    @property
    def affects(self) -> str:
        upper = f", <{self.fixed_in}" if self.fixed_in else ""
        return f">={self.first_affected}{upper}"


class _Undo:
    """One recorded change; ``undo()`` returns a note when it could not restore the original exactly."""

    def undo(self) -> Optional[str]:
        raise NotImplementedError


class _AttributeUndo(_Undo):
    def __init__(self, owner: Any, name: str, original: Any, installed: Any, disable: Callable[[], None]):
        self.owner, self.name, self.original, self.installed, self.disable = owner, name, original, installed, disable

    def undo(self) -> Optional[str]:
        # Something wrapped our replacement after we installed it: removing ours would strip theirs too,
        # so ours stays in place as a pass-through to the original.
        self.disable()
        if getattr(self.owner, self.name, None) is not self.installed:
            return f"{_qualname(self.owner)}.{self.name} was replaced again after trt_compat; left as a pass-through"
        setattr(self.owner, self.name, self.original)
        return None


class _PassListUndo(_Undo):
    def __init__(self, manager: Any, installed: Callable, original: Optional[Callable]):
        self.manager, self.installed, self.original = manager, installed, original

    def undo(self) -> Optional[str]:
        # The manager may have rebuilt its list (e.g. a debug pass was inserted), so look again by identity.
        passes = self.manager.passes
        for index, entry in enumerate(passes):
            if entry is self.installed:
                if self.original is None:
                    del passes[index]
                else:
                    passes[index] = self.original
                _invalidate(self.manager)
                return None
        return f"{getattr(self.installed, '__name__', self.installed)!r} is no longer in the lowering pass list"


def _qualname(obj: Any) -> str:
    return getattr(obj, "__name__", type(obj).__name__)


def _invalidate(manager: Any) -> None:
    # torch.fx's PassManager re-checks its constraints only when this flag is cleared.
    if hasattr(manager, "_validated"):
        manager._validated = False


class PatchContext:
    """Handed to a patch's ``apply``; every change goes through it so it can be undone exactly."""

    def __init__(self, patch: Patch, release: Tuple[int, ...]):
        self.patch = patch
        self.release = release
        self.active = True
        self.originals: dict = {}
        self._undo: List[_Undo] = []

    # -- feature checks -------------------------------------------------------------------------------------
    def import_module(self, name: str) -> ModuleType:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise TargetChanged(f"module {name} cannot be imported ({exc})") from exc

    def require_attr(self, owner: Any, name: str, check: Callable[[Any], bool] = lambda _: True) -> Any:
        value = getattr(owner, name, None)
        if value is None or not check(value):
            raise TargetChanged(f"{_qualname(owner)}.{name} is missing or has an unexpected shape")
        return value

    def find_pass(self, manager: Any, name: str) -> Optional[Callable]:
        """The upstream pass called ``name`` in a DynamoPassManager, or None when this release has none."""
        passes = getattr(manager, "passes", None)
        if not isinstance(passes, list):
            raise TargetChanged(f"lowering pass manager {manager!r} has no list of passes")
        for entry in passes:
            if getattr(entry, "__name__", None) == name and getattr(entry, "__module__", "").startswith("torch_tensorrt"):
                return entry
        return None

    # -- changes --------------------------------------------------------------------------------------------
    def wrap_function(self, owner: Any, name: str, wrapper: Callable) -> Any:
        """Replace ``owner.name`` by ``wrapper(wrapped, instance, args, kwargs)`` (wrapt's convention).

        The wrapper is bypassed once the patch is reverted, even if someone keeps a reference to it.
        """
        import wrapt

        original = self.require_attr(owner, name, callable)
        installed = wrapt.FunctionWrapper(original, wrapper, enabled=lambda: self.active)
        setattr(owner, name, installed)
        self.originals[f"{_qualname(owner)}.{name}"] = original
        self._undo.append(_AttributeUndo(owner, name, original, installed, self._deactivate))
        return installed

    def replace_pass(self, manager: Any, original: Callable, replacement: Callable) -> None:
        passes = manager.passes
        index = next((i for i, entry in enumerate(passes) if entry is original), None)
        if index is None:
            raise TargetChanged(f"{original.__name__} is not in the lowering pass list")
        passes[index] = replacement
        _invalidate(manager)
        self.originals[f"pass:{original.__name__}"] = original
        self._undo.append(_PassListUndo(manager, replacement, original))

    def insert_pass(self, manager: Any, new_pass: Callable, after: Optional[Callable] = None) -> None:
        """Insert after ``after`` (by identity), or at the end of the list when ``after`` is None."""
        passes = manager.passes
        if after is None:
            passes.append(new_pass)
        else:
            index = next((i for i, entry in enumerate(passes) if entry is after), None)
            if index is None:
                raise TargetChanged(f"{after.__name__} is not in the lowering pass list")
            passes.insert(index + 1, new_pass)
        _invalidate(manager)
        self._undo.append(_PassListUndo(manager, new_pass, None))

    # -- undo -----------------------------------------------------------------------------------------------
    def _deactivate(self) -> None:
        self.active = False

    def undo_all(self) -> List[str]:
        """Undo every recorded change, newest first; returns notes on what could not be restored exactly."""
        notes = []
        while self._undo:
            note = self._undo.pop().undo()
            if note:
                notes.append(note)
        self.active = False
        return notes


def lowering_pass(graph_pass: Callable[[Any], Any]) -> Callable:
    """Adapt ``graph_pass(gm) -> gm`` to the pass calling convention of any Torch-TensorRT release.

    The pass manager calls ``pass(gm, sample_inputs)`` on 2.2-2.4 and ``pass(gm, settings)`` from 2.6 on;
    our passes need neither, so the extra arguments are accepted and ignored.
    """

    def run(gm: Any, *_release_specific: Any) -> Any:
        return graph_pass(gm)

    run.__name__ = run.__qualname__ = graph_pass.__name__
    run.__doc__ = graph_pass.__doc__
    run.__module__ = graph_pass.__module__
    return run


def post_lowering_passes(ctx: PatchContext) -> Any:
    """The pass manager Torch-TensorRT runs after decomposition and before partitioning.

    Named ATEN_POST_LOWERING_PASSES from 2.3 on and ATEN_LOWERING_PASSES on 2.2.
    """
    module = ctx.import_module("torch_tensorrt.dynamo.lowering.passes._aten_lowering_pass")
    for name in ("ATEN_POST_LOWERING_PASSES", "ATEN_LOWERING_PASSES"):
        manager = getattr(module, name, None)
        if isinstance(getattr(manager, "passes", None), list):
            return manager
    raise TargetChanged(f"{module.__name__} has no post-lowering pass manager with a list of passes")

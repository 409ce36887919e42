"""The patch-author API: what a patch declares, and the context it changes Torch-TensorRT through.

A patch is one module under ``patches/`` (installed as ``trt_compat.patches``) that defines two names:

* ``PATCH``: a :class:`Patch` saying what it fixes, the upstream issue, the releases that need it, the defects it
  can reproduce (:class:`Defect`, run by ``trt_compat verify`` and the compatibility matrix) and its settings
  (:class:`Option`);
* ``apply(ctx)``: checks that its targets exist with the expected shape (raising :class:`TargetChanged`
  otherwise), then changes Torch-TensorRT only through the ``ctx`` methods, which record how to undo each change.

and may define a third, ``demonstrate(say)``: its fix shown with torch alone by ``trt-compat demo`` (see
:mod:`trt_compat.demo`).

If ``apply`` raises, every change it already made is undone, so a patch is either wholly in place or not at all.
A patch module imports torch at most (never torch_tensorrt at import time: its ``apply`` is what reaches it).

Lowering pass lists are never edited in place: every change assigns a new list, so a compile that is iterating
the old list while another thread applies or reverts a patch runs each of its passes exactly once.
"""

import functools
import importlib
import os
import re
import sys
import types
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from ._config import warn_once
from ._errors import NotApplicable, PatchError, TargetChanged

__all__ = [
    "Patch",
    "Defect",
    "Option",
    "PatchContext",
    "Changes",
    "Change",
    "TargetChanged",
    "NotApplicable",
    "PatchError",
    "PatchDefinitionError",
    "lowering_pass",
    "post_lowering_passes",
    "pass_list",
    "torch_executed_ops",
    "WRITES_KEPT_OUTSIDE",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RELEASE = re.compile(r"^[0-9]+(\.[0-9]+){1,2}$")


class PatchDefinitionError(ValueError):
    """A patch module declares something invalid (a malformed version, a missing field); names the field."""


def parse_release(text: str) -> Tuple[int, ...]:
    """``"2.5"`` -> (2, 5, 0); only plain releases are accepted in a patch's range."""
    if not isinstance(text, str) or not _RELEASE.match(text):
        raise PatchDefinitionError(f"{text!r} is not a release like '2.5.0'")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (3 - len(parts))


@dataclass(frozen=True)
class Defect:
    """An upstream defect a patch fixes, with the patch's own small reproducer.

    ``check(probe)`` runs against the installed Torch-TensorRT (``probe`` is a :class:`trt_compat.probing.Probe`)
    and returns None when it behaves correctly, or one line describing what is wrong; it raises
    :class:`NotApplicable` when the release does not have the code the defect lives in.
    """

    key: str
    title: str
    check: Callable[[Any], Optional[str]]

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _NAME.match(self.key):
            raise PatchDefinitionError(f"defect key {self.key!r} must be lower_case_with_underscores")
        if not isinstance(self.title, str) or not self.title.strip():
            raise PatchDefinitionError(f"defect {self.key!r} needs a title")
        if not callable(self.check):
            raise PatchDefinitionError(f"defect {self.key!r}: check must be callable")


# Values set from Python, by environment variable name; kept across importlib.reload of this module.
_option_overrides: Dict[str, str] = globals().get("_option_overrides", {})


class Option:
    """One setting of a patch: an environment variable with a fixed set of values, overridable from Python.

    Read every time it is used, so it may change after import; ``set(None)`` goes back to the environment.
    """

    def __init__(self, name: str, env: str, choices: Tuple[str, ...], default: str, help: str):
        if default not in choices:
            raise PatchDefinitionError(f"option {name!r}: default {default!r} is not one of {choices}")
        self.name, self.env, self.choices, self.default, self.help = name, env, tuple(choices), default, help

    def check(self, value: Any) -> str:
        """``value`` normalised, or ValueError naming the accepted values."""
        normalised = value.strip().lower() if isinstance(value, str) else value
        if normalised not in self.choices:
            raise ValueError(f"{self.name} must be one of {self.choices}, got {value!r}")
        return normalised

    def set(self, value: Optional[str]) -> None:
        if value is None:
            _option_overrides.pop(self.env, None)
        else:
            _option_overrides[self.env] = self.check(value)

    def value(self) -> str:
        """The value in force: set(), else the environment variable, else the default."""
        if self.env in _option_overrides:
            return _option_overrides[self.env]
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default
        try:
            return self.check(raw)
        except ValueError:
            # A typo in the environment must not break the program that compiles: say so (once), use the default.
            # Strict mode turns the same problem into an error when patches are applied (the engine asks problem()).
            warn_once([self.problem()])
            return self.default

    def problem(self) -> str:
        """Why the environment's value cannot be used, with the accepted values; "" when it can, when it is unset,
        or when set() decides instead."""
        raw = os.environ.get(self.env, "").strip()
        if self.env in _option_overrides or not raw or raw.lower() in self.choices:
            return ""
        return f"{self.env}={raw!r} is not one of {', '.join(self.choices)}; using the default {self.default!r}"

    def source(self) -> str:
        """Where the value in force comes from: "python", "environment" or "default"."""
        if self.env in _option_overrides:
            return "python"
        raw = os.environ.get(self.env, "").strip()
        if raw and raw.lower() in self.choices:
            return "environment"
        return "default"


@dataclass(frozen=True)
class Patch:
    """What a patch fixes and where. Every field is validated when the patch is created."""

    name: str
    title: str
    issue: Optional[str]
    """The upstream report (a URL), or None when the defect has not been reported upstream."""
    first_affected: str
    """Oldest Torch-TensorRT release that needs the patch."""
    fixed_in: Optional[str]
    """First release where upstream no longer needs it; None while every release up to the newest needs it."""
    why: str
    defects: Tuple[Defect, ...] = ()
    options: Tuple[Option, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise PatchDefinitionError(f"patch name {self.name!r} must be lower_case_with_underscores")
        where = f"patch {self.name!r}"
        if not isinstance(self.title, str) or not self.title.strip():
            raise PatchDefinitionError(f"{where} needs a title")
        if self.issue is not None and not (isinstance(self.issue, str) and self.issue.startswith("https://")):
            raise PatchDefinitionError(f"{where}: issue must be an https:// URL or None, got {self.issue!r}")
        if not isinstance(self.why, str):
            raise PatchDefinitionError(f"{where}: why must be text")
        try:
            first = parse_release(self.first_affected)
            fixed = None if self.fixed_in is None else parse_release(self.fixed_in)
        except PatchDefinitionError as exc:
            raise PatchDefinitionError(f"{where}: {exc}") from None
        if fixed is not None and fixed <= first:
            raise PatchDefinitionError(
                f"{where}: fixed_in {self.fixed_in} is not after first_affected {self.first_affected}"
            )
        for kind, items, cls in (("defects", self.defects, Defect), ("options", self.options, Option)):
            if not isinstance(items, tuple) or not all(isinstance(item, cls) for item in items):
                raise PatchDefinitionError(f"{where}: {kind} must be a tuple of {cls.__name__}")
        keys = [defect.key for defect in self.defects]
        if len(set(keys)) != len(keys):
            raise PatchDefinitionError(f"{where}: defect keys repeat: {keys}")

    def needed_on(self, release: Tuple[int, ...]) -> bool:
        if release < parse_release(self.first_affected):
            return False
        return self.fixed_in is None or release < parse_release(self.fixed_in)

    @property
    def affects(self) -> str:
        upper = f", <{self.fixed_in}" if self.fixed_in else ""
        return f">={self.first_affected}{upper}"

    def option(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(f"patch {self.name!r} has no option {name!r}")


# A graph module's meta entry, set by a patch that puts a graph's in-place writes into the caller's tensors itself after
# each call (from the graph's outputs): the names of those inputs. The value audit then judges what the user sees --
# the outputs -- and not whether a later pass still writes those inputs inside the graph.
WRITES_KEPT_OUTSIDE = "trt_compat.writes_kept_outside"

# Where Torch-TensorRT registers its own decompositions (2.2.0 to 2.14.0), read at every compile.
DECOMPOSITIONS_MODULE = "torch_tensorrt.dynamo.lowering._decompositions"
DECOMPOSITIONS_TABLE = "TORCH_TRT_DECOMPOSITIONS"


# -- recorded changes ---------------------------------------------------------------------------------------------


class Change(NamedTuple):
    """One change a patch made, as its undo log records it (see :attr:`Changes.records`)."""

    # "attribute" (owner.name replaced), "item" (owner[key] replaced, in a registry such as a decomposition table)
    # or "pass" (a lowering pass replaced or inserted)
    kind: str
    owner: Any  # the module or object (attribute), the mapping (item), or the pass manager (pass)
    name: str  # the attribute's name, the key in words, or the installed pass's name
    original: Any  # what was there before (None for an inserted pass)
    installed: Any  # what trt_compat put there
    key: Any = None  # the mapping's key (item)


class _Undo:
    """One recorded change; ``undo()`` returns a note when it could not restore the original exactly."""

    description = ""
    change: Change

    def undo(self) -> Optional[str]:
        raise NotImplementedError


class _AttributeUndo(_Undo):
    def __init__(self, owner: Any, name: str, original: Any, installed: Any, disable: Callable[[], None]):
        self.owner, self.name, self.original, self.installed, self.disable = owner, name, original, installed, disable
        self.description = f"wrapped {_qualname(owner)}.{name}"
        self.change = Change("attribute", owner, name, original, installed)

    def undo(self) -> Optional[str]:
        # Something wrapped our replacement after we installed it: removing ours would strip theirs too,
        # so ours stays in place as a pass-through to the original.
        self.disable()
        if getattr(self.owner, self.name, None) is not self.installed:
            return f"{_qualname(self.owner)}.{self.name} was replaced again after trt_compat; left as a pass-through"
        setattr(self.owner, self.name, self.original)
        return None


class _ItemUndo(_Undo):
    def __init__(self, mapping: Any, key: Any, name: str, original: Any, installed: Any, disable: Callable[[], None]):
        self.mapping, self.key, self.original, self.installed, self.disable = mapping, key, original, installed, disable
        self.description = f"wrapped {name}[{key}]"
        self.change = Change("item", mapping, str(key), original, installed, key)

    def undo(self) -> Optional[str]:
        self.disable()
        if self.mapping.get(self.key) is not self.installed:
            return f"the entry {self.key} was replaced again after trt_compat; left as a pass-through"
        self.mapping[self.key] = self.original
        return None


class _PassListUndo(_Undo):
    def __init__(self, manager: Any, installed: Callable, original: Optional[Callable]):
        self.manager, self.installed, self.original = manager, installed, original
        verb = "inserted" if original is None else f"replaced {_pass_name(original)} by"
        self.description = f"{verb} lowering pass {_pass_name(installed)}"
        self.change = Change("pass", manager, _pass_name(installed), original, installed)

    def undo(self) -> Optional[str]:
        # The manager may have rebuilt its list (e.g. a debug pass was inserted), so look again by identity.
        passes = list(getattr(self.manager, "passes", None) or ())
        for index, entry in enumerate(passes):
            if entry is self.installed:
                if self.original is None:
                    del passes[index]
                else:
                    passes[index] = self.original
                _assign_passes(self.manager, passes)
                return None
        return f"{_pass_name(self.installed)!r} is no longer in the lowering pass list"


def _qualname(obj: Any) -> str:
    return getattr(obj, "__name__", type(obj).__name__)


def _pass_name(entry: Any) -> str:
    return getattr(entry, "__name__", None) or repr(entry)


def pass_list(manager: Any) -> List[Callable]:
    """A copy of the manager's pass list; TargetChanged when it has none."""
    passes = getattr(manager, "passes", None)
    if not isinstance(passes, list):
        raise TargetChanged(f"lowering pass manager {manager!r} has no list of passes")
    return list(passes)


def _assign_passes(manager: Any, passes: List[Callable]) -> None:
    # A new list, never an edit of the old one: a compile in flight iterates the old list to its end.
    manager.passes = passes
    # torch.fx's PassManager re-checks its constraints only when this flag is cleared.
    if hasattr(manager, "_validated"):
        manager._validated = False


def _index_of(passes: List[Callable], entry: Callable) -> int:
    index = next((i for i, candidate in enumerate(passes) if candidate is entry), None)
    if index is None:
        raise TargetChanged(f"{_pass_name(entry)} is not in the lowering pass list")
    return index


class Changes:
    """Changes to Torch-TensorRT objects, each recorded so that ``undo_all`` restores the originals exactly."""

    def __init__(self) -> None:
        self.active = True
        self.originals: Dict[str, Any] = {}
        self._undo: List[_Undo] = []

    @property
    def changes(self) -> List[str]:
        """What is in place now, in words, oldest first (e.g. "wrapped torch_tensorrt.dynamo.partitioning.x")."""
        return [entry.description for entry in self._undo]

    @property
    def records(self) -> List[Change]:
        """What is in place now, oldest first: each change with its target, the original and the replacement."""
        return [entry.change for entry in self._undo]

    def wrap_function(self, owner: Any, name: str, wrapper: Callable) -> Callable:
        """Replace the function ``owner.name`` by one calling ``wrapper(wrapped, None, args, kwargs)``.

        ``owner`` is a module (or any object whose attribute is a plain callable), never a class: a class
        attribute would need descriptor handling that no target needs. Once reverted, the replacement is a
        pass-through to the original, even for callers that kept a reference to it.
        """
        if isinstance(owner, type):
            raise TypeError(f"wrap_function cannot wrap class attribute {owner.__name__}.{name}")
        original = getattr(owner, name, None)
        if original is None or not callable(original):
            raise TargetChanged(f"{_qualname(owner)}.{name} is missing or not callable")

        @functools.wraps(original)
        def patched(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return original(*args, **kwargs)
            return wrapper(original, None, args, kwargs)

        patched.__wrapped__ = original
        patched.__trt_compat_patch__ = getattr(getattr(self, "patch", None), "name", "trt_compat")
        setattr(owner, name, patched)
        self.originals[f"{_qualname(owner)}.{name}"] = original
        self._undo.append(_AttributeUndo(owner, name, original, patched, self._deactivate))
        return patched

    def wrap_item(self, mapping: Any, key: Any, wrapper: Callable, name: str) -> Callable:
        """Replace the callable ``mapping[key]`` (an entry of a registry, e.g. a decomposition table that is read at
        every compile) by one calling ``wrapper(wrapped, None, args, kwargs)``, as :meth:`wrap_function` does for an
        attribute; ``name`` describes the mapping in the report."""
        original = mapping.get(key) if hasattr(mapping, "get") else None
        if original is None or not callable(original):
            raise TargetChanged(f"{name} has no callable entry {key}")

        @functools.wraps(original)
        def patched(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return original(*args, **kwargs)
            return wrapper(original, None, args, kwargs)

        patched.__wrapped__ = original
        patched.__trt_compat_patch__ = getattr(getattr(self, "patch", None), "name", "trt_compat")
        mapping[key] = patched
        self.originals[f"{name}[{key}]"] = original
        self._undo.append(_ItemUndo(mapping, key, name, original, patched, self._deactivate))
        return patched

    def replace_pass(self, manager: Any, original: Callable, replacement: Callable) -> None:
        passes = pass_list(manager)
        passes[_index_of(passes, original)] = replacement
        _assign_passes(manager, passes)
        self.originals[f"pass:{_pass_name(original)}"] = original
        self._undo.append(_PassListUndo(manager, replacement, original))

    def insert_pass(self, manager: Any, new_pass: Callable, after: Optional[Callable] = None) -> None:
        """Insert after ``after`` (by identity), or at the end of the list when ``after`` is None."""
        passes = pass_list(manager)
        if after is None:
            passes.append(new_pass)
        else:
            passes.insert(_index_of(passes, after) + 1, new_pass)
        _assign_passes(manager, passes)
        self._undo.append(_PassListUndo(manager, new_pass, None))

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


class PatchContext(Changes):
    """Handed to a patch's ``apply``; every change goes through it so it can be undone exactly."""

    def __init__(self, patch: Patch, release: Tuple[int, ...]):
        super().__init__()
        self.patch = patch
        self.release = release

    def import_module(self, name: str) -> ModuleType:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise TargetChanged(f"module {name} cannot be imported ({exc})") from exc

    def wrap_decomposition(self, op: Any, wrapper: Callable) -> Callable:
        """Wrap Torch-TensorRT's own decomposition of ``op`` (its entry in ``TORCH_TRT_DECOMPOSITIONS``, which AOT
        tracing and the export path use) with :meth:`wrap_item`; TargetChanged when the release has none, or when
        ``get_decompositions`` no longer reads that table at every compile (a replaced entry would then do nothing).
        """
        module = self.import_module(DECOMPOSITIONS_MODULE)
        table = self.require_attr(module, DECOMPOSITIONS_TABLE, lambda value: isinstance(value, dict))
        reader = self.require_attr(module, "get_decompositions", callable)
        if DECOMPOSITIONS_TABLE not in getattr(getattr(reader, "__code__", None), "co_names", ()):
            raise TargetChanged(f"{DECOMPOSITIONS_MODULE}.get_decompositions no longer reads {DECOMPOSITIONS_TABLE}")
        return self.wrap_item(table, op, wrapper, f"{DECOMPOSITIONS_MODULE}.{DECOMPOSITIONS_TABLE}")

    def require_attr(self, owner: Any, name: str, check: Callable[[Any], bool] = lambda _: True) -> Any:
        value = getattr(owner, name, None)
        if value is None or not check(value):
            raise TargetChanged(f"{_qualname(owner)}.{name} is missing or has an unexpected shape")
        return value

    def find_pass(self, manager: Any, name: str) -> Optional[Callable]:
        """The upstream pass called ``name`` in a pass manager, or None when this release has none."""
        for entry in pass_list(manager):
            if getattr(entry, "__name__", None) == name and getattr(entry, "__module__", "").startswith(
                "torch_tensorrt"
            ):
                return entry
        return None


def lowering_pass(graph_pass: Callable[..., Any]) -> Callable:
    """Adapt ``graph_pass(gm) -> gm`` to the pass calling convention of any Torch-TensorRT release.

    The pass manager calls ``pass(gm, sample_inputs)`` on 2.2-2.4, ``pass(gm)`` on 2.5 and ``pass(gm, settings)``
    from 2.6 on; our passes need none of those, so the extra arguments are not passed on. A graph pass with a
    ``keep_in_torch`` parameter receives the ops the compile keeps in PyTorch (:func:`torch_executed_ops`), on
    every release.
    """
    import inspect

    wants_ops = "keep_in_torch" in inspect.signature(graph_pass).parameters

    def run(gm: Any, *release_specific: Any) -> Any:
        if wants_ops:
            return graph_pass(gm, keep_in_torch=torch_executed_ops(release_specific))
        return graph_pass(gm)

    run.__name__ = run.__qualname__ = graph_pass.__name__
    run.__doc__ = graph_pass.__doc__
    run.__module__ = graph_pass.__module__
    return run


def compile_settings(pass_args: Tuple[Any, ...] = ()) -> Optional[Any]:
    """The settings of the compile a lowering pass runs in, as far as they are known; None outside a compile.

    From 2.6 the pass manager hands the pass its CompilationSettings (pass ``pass_args`` through). Older releases
    hand it nothing of the kind, so the compile's own frames are asked: the ``torch.compile`` backend holds its
    ``settings`` while post-lowering runs, and ``dynamo.compile`` (2.2-2.5) its arguments, before it builds the
    settings from them. In that last case the answer is a namespace with the arguments a pass may need
    (``torch_executed_ops``, ``assume_dynamic_shape_support``).
    """
    for arg in pass_args:
        if _is_compilation_settings(arg):
            return arg
    frame = sys._getframe(1)
    for _ in range(_FRAMES_TO_SEARCH):
        frame = frame.f_back
        if frame is None:
            break
        if not frame.f_globals.get("__name__", "").startswith("torch_tensorrt"):
            continue
        local = frame.f_locals
        if _is_compilation_settings(local.get("settings")):
            return local["settings"]
        if isinstance(local.get("torch_executed_ops"), (set, frozenset, list, tuple, type(None))) and (
            "torch_executed_ops"
            in frame.f_code.co_varnames[: frame.f_code.co_argcount + frame.f_code.co_kwonlyargcount]
        ):
            return types.SimpleNamespace(**{name: local[name] for name in _COMPILE_ARGUMENTS if name in local})
    return None


def torch_executed_ops(pass_args: Tuple[Any, ...] = ()) -> FrozenSet[str]:
    """The ops the user asked the running compile to keep in PyTorch (``torch_executed_ops``), for a lowering pass
    to leave alone; each spelled as ``aten.max_pool2d.default`` (see :func:`trt_compat.describe.op_key`). Empty
    outside a compile (a test calling the lowering directly). See :func:`compile_settings`."""
    from .describe import op_key

    ops = getattr(compile_settings(pass_args), "torch_executed_ops", None) or ()
    return frozenset(op_key(op) for op in ops)


# post_lowering -> the pass manager -> the adapter -> the pass: the compile's frame is a few levels up.
_FRAMES_TO_SEARCH = 12
# What dynamo.compile's arguments say about the compile before it builds its CompilationSettings (2.2-2.5).
_COMPILE_ARGUMENTS = ("torch_executed_ops", "assume_dynamic_shape_support", "min_block_size")


def _is_compilation_settings(value: Any) -> bool:
    return type(value).__name__ == "CompilationSettings" and hasattr(value, "torch_executed_ops")


def post_lowering_passes(ctx: Optional[PatchContext] = None) -> Any:
    """The pass manager Torch-TensorRT runs after decomposition and before partitioning.

    Named ATEN_POST_LOWERING_PASSES from 2.3 on and ATEN_LOWERING_PASSES on 2.2. ``ctx`` is accepted for the
    patches that call it with theirs; the look-up itself changes nothing.
    """
    try:
        module = importlib.import_module("torch_tensorrt.dynamo.lowering.passes._aten_lowering_pass")
    except ImportError as exc:
        raise TargetChanged(
            f"module torch_tensorrt.dynamo.lowering.passes._aten_lowering_pass cannot be imported ({exc})"
        ) from exc
    for name in ("ATEN_POST_LOWERING_PASSES", "ATEN_LOWERING_PASSES"):
        manager = getattr(module, name, None)
        if isinstance(getattr(manager, "passes", None), list):
            return manager
    raise TargetChanged(f"{module.__name__} has no post-lowering pass manager with a list of passes")

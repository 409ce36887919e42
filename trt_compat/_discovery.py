"""Finds the patch modules under ``trt_compat.patches`` and checks each one's contract, one module at a time.

Each module is isolated: one that fails to import, declares an invalid ``PATCH`` or misspells ``apply`` is
reported under its own name with the reason, and every other patch is still found. Modules are imported on first
need (they import torch), never at ``import trt_compat``. Names starting with "_" are helpers, not patches.
"""

import difflib
import importlib
import importlib.util
import pkgutil
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, List, Optional

# importlib.reload() re-runs this file in the same namespace: keep what was found (the modules stay imported).
_lock = globals().get("_lock") or threading.RLock()
_found: Optional[List["Found"]] = globals().get("_found")
# Set while this thread imports the patch modules: an import they trigger may ask for discovery again.
_discovering = globals().get("_discovering") or threading.local()


@dataclass(frozen=True)
class Found:
    """One module of the patch folder: a usable patch, or why it is not one."""

    name: str
    patch: Any = None  # the module's PATCH (a trt_compat.patching.Patch) when usable
    module: Optional[ModuleType] = None
    error: str = ""  # why the module cannot be used as a patch
    unavailable: str = ""  # why its code cannot be loaded in this environment at all (no torch)

    @property
    def usable(self) -> bool:
        return self.patch is not None and not self.error


def module_names() -> List[str]:
    """The patch modules' names, without importing any of them."""
    from . import patches as package

    return sorted(info.name for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_"))


def discover() -> List[Found]:
    """Every patch module, in name order (cached: modules are imported once)."""
    global _found
    with _lock:
        if _found is None:
            _discovering.active = True
            try:
                _found = _discover()
            finally:
                _discovering.active = False
        return list(_found)


def in_progress() -> bool:
    """Whether this thread is importing the patch modules right now."""
    return getattr(_discovering, "active", False)


def _discover() -> List[Found]:
    names = module_names()
    if importlib.util.find_spec("torch") is None:
        # Patch modules import torch; without it none can load, and none is needed (neither is torch_tensorrt).
        return [Found(name, unavailable="torch is not installed") for name in names]
    found: List[Found] = []
    keys: dict = {}
    for name in names:
        entry = _load(name)
        if entry.usable:
            clash = [d.key for d in entry.patch.defects if d.key in keys]
            if clash:
                entry = Found(
                    name,
                    entry.patch,
                    entry.module,
                    error=f"defect key(s) {', '.join(clash)} already declared by {keys[clash[0]]}",
                )
            else:
                keys.update((d.key, name) for d in entry.patch.defects)
        found.append(entry)
    return found


def _load(name: str) -> Found:
    full = f"{__package__}.patches.{name}"
    try:
        module = importlib.import_module(full)
    except Exception as exc:  # a broken patch module must not hide the others
        return Found(name, error=f"cannot import {full}: {type(exc).__name__}: {exc}")
    patch = getattr(module, "PATCH", None)
    apply = getattr(module, "apply", None)
    problems = []
    # By shape, not isinstance: a reload of trt_compat.patching makes a new Patch class, and the patch modules
    # imported before it keep instances of the old one.
    if patch is None or type(patch).__name__ != "Patch" or not callable(getattr(patch, "needed_on", None)):
        problems.append("defines no PATCH = Patch(...)" + did_you_mean(module, "PATCH"))
    elif patch.name != name:
        problems.append(f"PATCH.name is {patch.name!r}; it must be the module's name {name!r}")
    if not callable(apply):
        problems.append("defines no apply(ctx) function" + did_you_mean(module, "apply"))
    if problems:
        return Found(name, module=module, error="; ".join(problems))
    return Found(name, patch, module)


def did_you_mean(module: ModuleType, wanted: str) -> str:
    """A hint for a message, `` (found 'NAME': a misspelling?)``, when ``module`` defines a name close to ``wanted``;
    else the empty string."""
    close = difflib.get_close_matches(wanted, [n for n in vars(module) if not n.startswith("__")], n=1, cutoff=0.6)
    return f" (found {close[0]!r}: a misspelling?)" if close else ""

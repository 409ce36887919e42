"""Finds the patches, decides which the installed release needs, applies and reverts them, and reports.

Everything here runs under one re-entrant lock: the post-import hook and explicit ``apply()`` calls may race
from several threads, and the hook fires inside ``apply()`` itself when that call imports torch_tensorrt.
"""
import contextlib
import importlib
import logging
import pkgutil
import sys
import threading
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Tuple

from . import audit
from ._config import read_config
from ._detect import installed_versions, release_of
from ._patching import Patch, PatchContext, PatchError, TargetChanged
from ._tested import UNTESTED, newest_tested, release_status

logger = logging.getLogger("trt_compat")

TARGET_MODULE = "torch_tensorrt"

APPLIED = "applied"
NOT_NEEDED = "not_needed"
DISABLED = "disabled"
FAILED = "failed"
SKIPPED = "skipped"
PENDING = "pending"
REVERTED = "reverted"
NOT_INSTALLED = "not_installed"

# importlib.reload() re-runs this file in the same namespace. The lock and the records of applied patches must
# survive it: with fresh ones apply() would patch a second time on top and revert() could no longer find the
# originals.
_lock = globals().get("_lock") or threading.RLock()


@dataclass
class PatchStatus:
    name: str
    title: str
    issue: str
    affects: str
    state: str
    reason: str = ""


@dataclass
class Report:
    versions: Dict[str, Optional[str]]
    patches: List[PatchStatus] = field(default_factory=list)
    strict: bool = False
    release_status: str = "unknown"  # "tested" / "untested" / "unknown": see trt_compat._tested

    def to_dict(self) -> dict:
        return {"versions": dict(self.versions), "strict": self.strict, "release_status": self.release_status,
                "patches": [asdict(p) for p in self.patches]}

    @property
    def failed(self) -> List[PatchStatus]:
        """Patches that were needed but are not in place: what strict mode refuses."""
        return [p for p in self.patches if p.state in (FAILED, SKIPPED)]

    def __str__(self) -> str:
        v = self.versions
        lines = [
            f"torch-tensorrt {v.get('torch_tensorrt') or 'not installed'}"
            + (f" ({v['torch_tensorrt_distribution']})" if v.get("torch_tensorrt_distribution") else ""),
            f"torch          {v.get('torch') or 'not installed'}",
            f"tensorrt       {v.get('tensorrt') or 'not installed'}",
            f"release        {self._release_line()}",
            "",
        ]
        width = max((len(p.name) for p in self.patches), default=0)
        for p in self.patches:
            reason = f"  ({p.reason})" if p.reason else ""
            lines.append(f"{p.name:<{width}}  {p.state:<13} {p.issue}{reason}")
        return "\n".join(lines)

    def _release_line(self) -> str:
        if self.release_status != UNTESTED:
            return self.release_status
        applied = ", ".join(p.name for p in self.patches if p.state == APPLIED) or "none"
        return (f"untested release (tested: up to {newest_tested()}); each patch decided by its version range and "
                f"its feature check; applied: {applied}")


@dataclass
class _Record:
    patch: Patch
    state: str
    reason: str = ""
    context: Optional[PatchContext] = None


_records: Dict[str, _Record] = globals().get("_records", {})  # kept across reload, see _lock
_discovered: Optional[List[Tuple[Patch, ModuleType]]] = None
_import_failure: Optional[str] = None


def note_import_failure(exc: BaseException) -> None:
    """Remember why ``import torch_tensorrt`` failed under ``trt_compat.apply()``, for the report."""
    global _import_failure
    if installed_versions()["torch_tensorrt"] is not None:
        _import_failure = f"import torch_tensorrt failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        logger.warning("trt_compat: %s", _import_failure)
        _raise_if_strict([_import_failure])


def discover_patches() -> List[Tuple[Patch, ModuleType]]:
    """Every module under trt_compat.patches that defines ``PATCH`` and ``apply``, in name order.

    Imported on first need (they import torch), never at ``import trt_compat``.
    """
    global _discovered
    with _lock:
        if _discovered is None:
            from . import patches as package

            found = []
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
                module = importlib.import_module(f"{package.__name__}.{info.name}")
                if isinstance(getattr(module, "PATCH", None), Patch) and callable(getattr(module, "apply", None)):
                    found.append((module.PATCH, module))
            _discovered = found
        return _discovered


def _target_release() -> Tuple[Optional[str], Optional[Tuple[int, ...]]]:
    version = installed_versions()["torch_tensorrt"]
    if version is None and TARGET_MODULE in sys.modules:
        # A source build or an unpacked tree without package metadata still says its version.
        version = getattr(sys.modules[TARGET_MODULE], "__version__", None)
    return version, release_of(str(version) if version else None)


def _apply_one(patch: Patch, module: ModuleType, release: Optional[Tuple[int, ...]], version: Optional[str]) -> _Record:
    config = read_config()
    if config.is_disabled(patch.name):
        return _Record(patch, DISABLED, "disabled by TRT_COMPAT_DISABLE")
    if release is None:
        return _Record(patch, SKIPPED, f"cannot tell which release torch_tensorrt {version!r} is")
    if not patch.needed_on(release):
        return _Record(patch, NOT_NEEDED, f"torch-tensorrt {version} is outside {patch.affects}")
    context = PatchContext(patch, release)
    try:
        module.apply(context)
    except TargetChanged as exc:
        notes = context.undo_all()
        logger.warning("trt_compat: %s skipped on torch-tensorrt %s: %s", patch.name, version, exc)
        return _Record(patch, SKIPPED, "; ".join([f"target changed: {exc}"] + notes))
    except Exception as exc:  # a broken patch must never take the importing program down
        notes = context.undo_all()
        logger.warning("trt_compat: %s failed on torch-tensorrt %s", patch.name, version, exc_info=True)
        return _Record(patch, FAILED, "; ".join([f"{type(exc).__name__}: {exc}"] + notes))
    return _Record(patch, APPLIED, f"torch-tensorrt {version} is in {patch.affects}", context)


def apply_patches() -> Report:
    """Apply every needed patch not yet applied; requires torch_tensorrt to be imported already."""
    with _lock, _audit_lifted():
        version, release = _target_release()
        try:
            patches = discover_patches()
        except Exception as exc:
            logger.warning("trt_compat: could not load its patches", exc_info=True)
            _raise_if_strict([f"loading patches: {type(exc).__name__}: {exc}"])
            return build_report()
        for patch, module in patches:
            current = _records.get(patch.name)
            if current is not None and current.state == APPLIED:
                continue
            _records[patch.name] = _apply_one(patch, module, release, version)
        applied = [n for n, r in _records.items() if r.state == APPLIED]
        logger.info("trt_compat: torch-tensorrt %s, applied: %s", version, ", ".join(applied) or "none")
        # A patch skipped inside its range leaves the defect in place: strict mode treats that as a failure.
        _raise_if_strict([f"{n}: {r.state}: {r.reason}" for n, r in _records.items() if r.state in (FAILED, SKIPPED)])
        return build_report()


def revert_patches() -> Report:
    with _lock, _audit_lifted():
        problems = []
        for name in reversed(list(_records)):
            record = _records[name]
            if record.state != APPLIED or record.context is None:
                continue
            notes = record.context.undo_all()
            record.state, record.context = REVERTED, None
            record.reason = "; ".join(notes) or "originals restored"
            problems.extend(f"{name}: {note}" for note in notes)
            for note in notes:
                logger.warning("trt_compat: reverting %s: %s", name, note)
        _raise_if_strict(problems)
        return build_report()


@contextlib.contextmanager
def _audit_lifted() -> Iterator[None]:
    """Take the metadata audit's pass wrappers off while patches change the pass list, then wrap it again.

    Patches find upstream passes, and undo their own, by identity in that list; the audit wraps whatever the
    list finally holds (see trt_compat.audit).
    """
    audit.uninstall()
    try:
        yield
    finally:
        audit.sync()


def _raise_if_strict(problems: List[str]) -> None:
    if problems and read_config().strict:
        raise PatchError("trt_compat (strict mode): " + "; ".join(problems))


def build_report() -> Report:
    with _lock:
        versions = installed_versions()
        config = read_config()
        version, release = _target_release()
        statuses = []
        try:
            patches = discover_patches()
        except Exception as exc:
            return Report(versions, [PatchStatus("*", "patches could not be loaded", "", "", FAILED, repr(exc))],
                          config.strict, release_status(version, release))
        for patch, _ in patches:
            record = _records.get(patch.name)
            if record is not None:
                state, reason = record.state, record.reason
            elif config.is_disabled(patch.name):
                state, reason = DISABLED, "disabled by TRT_COMPAT_DISABLE"
            elif version is None:
                state, reason = NOT_INSTALLED, "torch-tensorrt is not installed"
            elif release is not None and not patch.needed_on(release):
                state, reason = NOT_NEEDED, f"torch-tensorrt {version} is outside {patch.affects}"
            elif _import_failure is not None and TARGET_MODULE not in sys.modules:
                state, reason = PENDING, _import_failure
            else:
                state, reason = PENDING, "applied when torch_tensorrt is imported"
            statuses.append(PatchStatus(patch.name, patch.title, patch.issue, patch.affects, state, reason))
        return Report(versions, statuses, config.strict, release_status(version, release))


def context_of(name: str) -> Optional[PatchContext]:
    record = _records.get(name)
    return record.context if record is not None else None


def on_torch_tensorrt_imported(_module: ModuleType) -> None:
    """The post-import hook: apply, and outside strict mode never let anything escape into the user's import."""
    try:
        apply_patches()
    except PatchError:
        raise
    except Exception:
        logger.warning("trt_compat: unexpected error while patching torch_tensorrt", exc_info=True)

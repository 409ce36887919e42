"""Decides which patches the installed release needs, applies and reverts them, and assembles the report.

Everything here runs under trt_compat's one lock (``_state.LOCK``): the post-import hook and explicit ``apply()``
calls may race from several threads, and the hook fires inside ``apply()`` itself when that call imports
torch_tensorrt.
"""

import contextlib
import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Dict, Iterator, List, Optional, Tuple

from . import _detect, _discovery
from ._config import Config, normalise_name, read_config, warn_once
from ._detect import release_of
from ._discovery import Found
from ._errors import PatchError, TargetChanged
from ._report import (
    APPLIED,
    DISABLED,
    FAILED,
    NOT_INSTALLED,
    NOT_NEEDED,
    PENDING,
    PROBLEM_STATES,
    REVERTED,
    SKIPPED,
    PatchStatus,
    Report,
    Setting,
)
from ._state import LOCK as _lock
from ._tested import newest_tested, release_status

logger = logging.getLogger("trt_compat")

__all__ = [
    "APPLIED",
    "NOT_NEEDED",
    "DISABLED",
    "FAILED",
    "SKIPPED",
    "PENDING",
    "REVERTED",
    "NOT_INSTALLED",
    "apply_patches",
    "revert_patches",
    "build_report",
    "decide",
    "context_of",
]


@dataclass
class _Record:
    name: str
    state: str
    reason: str = ""
    context: Any = None  # the PatchContext of an applied patch


# importlib.reload() re-runs this file in the same namespace. The records of applied patches must survive it:
# with fresh ones apply() would patch a second time on top and revert() could no longer find the originals.
_records: Dict[str, _Record] = globals().get("_records", {})
_import_failure: Optional[str] = globals().get("_import_failure")
# Per thread (the hook runs in the thread that imports torch_tensorrt): see hook_errors_collected.
_importing_for_apply = globals().get("_importing_for_apply") or threading.local()


def note_import_failure(exc: BaseException) -> None:
    """Remember why ``import torch_tensorrt`` failed under ``trt_compat.apply()``, for the report."""
    global _import_failure
    if _detect.installed_versions()["torch_tensorrt"] is not None:
        _import_failure = f"import torch_tensorrt failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        logger.warning("trt_compat: %s", _import_failure)
        _raise_if_strict([_import_failure], read_config())


def decide(
    found: Found, release: Optional[Tuple[int, ...]], version: Optional[str], config: Config
) -> Optional[Tuple[str, str]]:
    """The state a patch is in without trying to apply it, with the reason; None when it is to be applied.

    The one place that decides: applying and reporting both ask it.
    """
    if found.unavailable:
        return NOT_INSTALLED, found.unavailable
    if found.error:
        return FAILED, found.error
    if config.is_disabled(found.name):
        return DISABLED, "disabled by TRT_COMPAT_DISABLE"
    if version is None:
        return NOT_INSTALLED, "torch-tensorrt is not installed"
    if release is None:
        return SKIPPED, f"cannot tell which release torch_tensorrt {version!r} is"
    if not found.patch.needed_on(release):
        return NOT_NEEDED, f"torch-tensorrt {version} is outside {found.patch.affects}"
    return None


def _apply_one(
    patch: Any,
    module: ModuleType,
    release: Optional[Tuple[int, ...]],
    version: Optional[str],
    config: Optional[Config] = None,
) -> _Record:
    from .patching import PatchContext

    decided = decide(Found(patch.name, patch, module), release, version, config or read_config())
    if decided is not None:
        return _Record(patch.name, *decided)
    context = PatchContext(patch, release)
    try:
        module.apply(context)
    except TargetChanged as exc:
        notes = context.undo_all()
        logger.warning("trt_compat: %s skipped on torch-tensorrt %s: %s", patch.name, version, exc)
        return _Record(patch.name, SKIPPED, "; ".join([f"target changed: {exc}"] + notes))
    except Exception as exc:  # a broken patch must never take the importing program down
        notes = context.undo_all()
        logger.warning("trt_compat: %s failed on torch-tensorrt %s", patch.name, version, exc_info=True)
        return _Record(patch.name, FAILED, "; ".join([f"{type(exc).__name__}: {exc}"] + notes))
    return _Record(patch.name, APPLIED, f"torch-tensorrt {version} is in {patch.affects}", context)


def _configuration(found: List[Found]) -> Config:
    """The settings, with every one that cannot be understood as a problem: TRT_COMPAT_DISABLE's and
    TRT_COMPAT_STRICT's, each patch option's and TRT_COMPAT_AUDIT's. Each problem is logged once."""
    from . import audit

    options = [option for entry in found if entry.usable for option in entry.patch.options]
    config = (
        read_config()
        .check_names(f.name for f in found)
        .with_problems([option.problem() for option in options] + [audit.environment_problem()])
    )
    warn_once(config.problems)
    return config


def check_settings() -> None:
    """Strict mode: PatchError when a setting cannot be understood, also with no torch_tensorrt to patch."""
    with _lock:
        try:
            found = _discovery.discover()
        except Exception:  # a damaged install, which the report says; without the patches there is nothing to check
            return
        config = _configuration(found)
    _raise_if_strict(list(config.problems), config)


def apply_patches() -> Report:
    """Apply every needed patch not yet applied; requires torch_tensorrt to be imported already."""
    with _lock, _audit_lifted():
        version, _ = _detect.target_version()
        release = release_of(version)
        try:
            found = _discovery.discover()
        except Exception as exc:  # the patch folder itself cannot be read: a damaged install
            logger.warning("trt_compat: could not load its patches", exc_info=True)
            _raise_if_strict([f"loading patches: {type(exc).__name__}: {exc}"], read_config())
            return build_report()
        config = _configuration(found)
        if version is not None and release is None:
            warn_once([f"cannot tell which release torch_tensorrt {version!r} is; no patch applied"])
        for entry in found:
            current = _records.get(entry.name)
            if current is not None and current.state == APPLIED:
                continue
            if entry.usable:
                _records[entry.name] = _apply_one(entry.patch, entry.module, release, version, config)
            else:
                _records[entry.name] = _Record(entry.name, *decide(entry, release, version, config))
                if _records[entry.name].state == FAILED:
                    logger.warning("trt_compat: patch module %s: %s", entry.name, entry.error)
        applied = [name for name, record in _records.items() if record.state == APPLIED]
        logger.info("trt_compat: torch-tensorrt %s, applied: %s", version, ", ".join(applied) or "none")
        # A patch skipped inside its range leaves the defect in place: strict mode treats that as a failure.
        _raise_if_strict(
            list(config.problems)
            + [
                not_in_place(name, record.state, record.reason)
                for name, record in _records.items()
                if record.state in PROBLEM_STATES
            ],
            config,
        )
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
        _raise_if_strict(problems, read_config())
        return build_report()


@contextlib.contextmanager
def _audit_lifted() -> Iterator[None]:
    """Take the audit's pass wrappers off while patches change the pass list, then wrap it again.

    Patches find upstream passes, and undo their own, by identity in that list; the audit wraps whatever the
    list finally holds (see trt_compat.audit).
    """
    from . import audit

    audit.uninstall()
    try:
        yield
    finally:
        audit.sync()


def not_in_place(name: str, state: str, reason: str) -> str:
    """What to say of a patch its release needs that is not in place (state: failed or skipped)."""
    return f"patch {name} could not be applied: {state}: {reason}"


def _raise_if_strict(problems: List[str], config: Config) -> None:
    if problems and config.strict:
        raise PatchError("trt_compat (strict mode): " + "; ".join(problems))


def _settings(found: List[Found], config: Config) -> List[Setting]:
    from . import audit

    settings = [
        Setting("strict", "on" if config.strict else "off", "environment" if config.strict else "default"),
        Setting("audit", audit.mode(), audit.mode_source()),
    ]
    for entry in found:
        for option in entry.patch.options if entry.usable else ():
            settings.append(Setting(option.name, option.value(), option.source()))
    return settings


def build_report() -> Report:
    from ._version import __version__

    with _lock:
        versions = _detect.installed_versions()
        version, source = _detect.target_version()
        release = release_of(version)
        notes = []
        if source == "module":
            versions["torch_tensorrt"] = version
            notes.append(
                f"torch_tensorrt {version} has no package metadata (a source tree?); its version was read "
                "from torch_tensorrt.__version__"
            )
        try:
            found = _discovery.discover()
        except Exception as exc:  # the patch folder itself cannot be read: a damaged install
            found = [Found("patches", error=f"the patch folder cannot be loaded: {type(exc).__name__}: {exc}")]
        config = _configuration(found)
        notes += list(config.problems)
        statuses = []
        for entry in found:
            record = _records.get(entry.name)
            if record is not None:
                state, reason = record.state, record.reason
            else:
                state, reason = decide(entry, release, version, config) or _pending()
            patch = entry.patch if entry.usable else None
            statuses.append(
                PatchStatus(
                    entry.name,
                    patch.title if patch else "",
                    patch.issue if patch else None,
                    patch.affects if patch else "",
                    state,
                    reason,
                )
            )
        return Report(
            versions,
            statuses,
            config.strict,
            release_status(version, release),
            trt_compat_version=__version__,
            settings=_settings(found, config),
            newest_tested=newest_tested(),
            notes=notes,
        )


def _pending() -> Tuple[str, str]:
    if _import_failure is not None and _detect.imported_target() is None:
        return PENDING, _import_failure
    return PENDING, "applied when torch_tensorrt is imported"


def context_of(name: str) -> Any:
    """The PatchContext of patch ``name`` while it is applied, else None; ``name`` is spelled as
    TRT_COMPAT_DISABLE accepts it (case and "-" versus "_" do not matter)."""
    record = _records.get(normalise_name(name))
    return record.context if record is not None else None


def on_torch_tensorrt_imported(_module: ModuleType) -> None:
    """The post-import hook: apply; outside strict mode nothing escapes into the user's import."""
    try:
        _apply_on_import()
    except PatchError as exc:
        collected = getattr(_importing_for_apply, "errors", None)
        if collected is None:  # the user's own `import torch_tensorrt`: strict mode raises out of it
            raise
        collected.append(exc)


def _apply_on_import() -> None:
    try:
        apply_patches()
    except PatchError:
        raise
    except Exception as exc:
        logger.warning("trt_compat: unexpected error while patching torch_tensorrt", exc_info=True)
        if read_config().strict:
            raise PatchError(
                f"trt_compat (strict mode): unexpected error while patching torch_tensorrt: {type(exc).__name__}: {exc}"
            ) from exc


@contextlib.contextmanager
def hook_errors_collected() -> Iterator[List[PatchError]]:
    """For ``trt_compat.apply()`` while it imports torch_tensorrt: a strict-mode PatchError of the post-import hook
    is collected in the yielded list instead of raised out of the import.

    Raised out of the import it would make Python drop the fully imported torch_tensorrt from sys.modules, and
    apply() would report trt_compat's own refusal as "import torch_tensorrt failed"; apply() raises it once the
    import is complete instead.
    """
    previous = getattr(_importing_for_apply, "errors", None)
    _importing_for_apply.errors = collected = []
    try:
        yield collected
    finally:
        _importing_for_apply.errors = previous


def find_option(name: str) -> Any:
    """The patch option called ``name`` (a trt_compat.patching.Option); ValueError naming the known ones."""
    options = [option for entry in _discovery.discover() if entry.usable for option in entry.patch.options]
    for option in options:
        if option.name == name:
            return option
    raise ValueError(f"no patch has an option {name!r}; options: {', '.join(o.name for o in options) or 'none'}")

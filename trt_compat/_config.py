"""Configuration from the environment, read when patches are applied (never cached across calls).

TRT_COMPAT_DISABLE   "1", "all" or "*" disables every patch; otherwise a comma-separated list of patch names.
TRT_COMPAT_STRICT    "1"/"true"/"yes"/"on": a patch that fails to apply raises instead of being logged and skipped.
TRT_COMPAT_POOL_INDICES  "tensorrt" (default) or "torch": where max-pool indices and unpooling are computed;
                     read each time a graph is rewritten, and overridden by set_pool_indices().
"""
import logging
import os
from dataclasses import dataclass
from typing import FrozenSet, Optional

_TRUE = {"1", "true", "yes", "on"}
_ALL = {"1", "all", "*", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Config:
    disable_all: bool
    disabled: FrozenSet[str]
    strict: bool

    def is_disabled(self, patch_name: str) -> bool:
        return self.disable_all or patch_name in self.disabled


def read_config() -> Config:
    raw = os.environ.get("TRT_COMPAT_DISABLE", "").strip()
    disable_all = raw.lower() in _ALL
    names = frozenset() if disable_all else frozenset(p.strip() for p in raw.split(",") if p.strip())
    return Config(disable_all=disable_all, disabled=names, strict=_flag("TRT_COMPAT_STRICT"))


POOL_INDICES_ENV = "TRT_COMPAT_POOL_INDICES"
POOL_INDICES_TENSORRT = "tensorrt"
POOL_INDICES_TORCH = "torch"
POOL_INDICES_MODES = (POOL_INDICES_TENSORRT, POOL_INDICES_TORCH)

_pool_indices_override: Optional[str] = None


def check_pool_indices(mode: str) -> str:
    """``mode`` normalised, or ValueError naming the accepted values."""
    normalised = mode.strip().lower() if isinstance(mode, str) else mode
    if normalised not in POOL_INDICES_MODES:
        raise ValueError(f"pool indices mode must be one of {POOL_INDICES_MODES}, got {mode!r}")
    return normalised


def set_pool_indices(mode: Optional[str]) -> None:
    """Set the mode for later graph rewrites; None goes back to the environment variable."""
    global _pool_indices_override
    _pool_indices_override = None if mode is None else check_pool_indices(mode)


def pool_indices() -> str:
    """The mode in force: set_pool_indices(), else TRT_COMPAT_POOL_INDICES, else "tensorrt"."""
    if _pool_indices_override is not None:
        return _pool_indices_override
    raw = os.environ.get(POOL_INDICES_ENV, "").strip()
    if not raw:
        return POOL_INDICES_TENSORRT
    try:
        return check_pool_indices(raw)
    except ValueError:
        # A typo in the environment must not break the program that compiles: say so, use the default.
        logging.getLogger("trt_compat").warning(
            "ignoring %s=%r (expected one of %s); using %r", POOL_INDICES_ENV, raw, POOL_INDICES_MODES,
            POOL_INDICES_TENSORRT)
        return POOL_INDICES_TENSORRT

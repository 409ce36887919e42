"""Configuration from the environment, read when patches are applied (never cached across calls).

TRT_COMPAT_DISABLE   "1", "all" or "*" disables every patch; otherwise a comma-separated list of patch names.
TRT_COMPAT_STRICT    "1"/"true"/"yes"/"on": a patch that fails to apply raises instead of being logged and skipped.
"""
import os
from dataclasses import dataclass
from typing import FrozenSet

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

"""trt_compat's own settings, read from the environment each time they are needed (never cached across calls).

TRT_COMPAT_DISABLE   "1", "all" or "*" disables every patch; "0", "none", "false", "no", "off" or empty disables
                     none; otherwise a comma-separated list of patch names (case and "-" versus "_" do not matter;
                     an unknown name is a warning, in strict mode an error).
TRT_COMPAT_STRICT    "1"/"true"/"yes"/"on": whatever trt_compat cannot do raises instead of being logged.
                     "0"/"false"/"no"/"off" or unset: off. Anything else counts as on, and is itself an error.

Settings of single patches (e.g. TRT_COMPAT_POOL_INDICES) are declared by their patch (trt_compat.patching.Option);
the audits' TRT_COMPAT_AUDIT is read by trt_compat.audit. The engine gathers the problems of all of them into one
Config (trt_compat._engine._configuration): each is logged once, shown in the report's notes, and in strict mode
raised as trt_compat.PatchError.
"""

import logging
import os
from dataclasses import dataclass
from typing import FrozenSet, Iterable, Tuple

DISABLE_ENV = "TRT_COMPAT_DISABLE"
STRICT_ENV = "TRT_COMPAT_STRICT"

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")
DISABLE_ALL = ("1", "all", "*", "true", "yes", "on")
# The spellings of "off" mean what they say: nothing disabled (not a patch called "0").
DISABLE_NONE = OFF + ("none",)

logger = logging.getLogger("trt_compat")


def normalise_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def read_switch(env: str) -> Tuple[bool, str]:
    """(on?, problem) of an on/off environment variable; an unrecognised value counts as on, with a problem."""
    raw = os.environ.get(env, "").strip()
    value = raw.lower()
    if not value or value in OFF:
        return False, ""
    if value in ON:
        return True, ""
    return True, f"{env}={raw!r} is not one of {'/'.join(ON)} (on) or {'/'.join(OFF)} (off); treated as on"


@dataclass(frozen=True)
class Config:
    disable_all: bool
    disabled: FrozenSet[str]
    strict: bool
    problems: Tuple[str, ...] = ()
    """Settings that could not be understood, in words; a warning, and in strict mode an error."""

    def is_disabled(self, patch_name: str) -> bool:
        return self.disable_all or patch_name in self.disabled

    def check_names(self, known: Iterable[str]) -> "Config":
        """This configuration with a problem added for each disabled name that is no patch's name."""
        known = sorted(known)
        unknown = sorted(self.disabled - set(known))
        if not unknown:
            return self
        return self.with_problems(
            [
                f"{DISABLE_ENV} names unknown patch(es) {', '.join(unknown)}; known: {', '.join(known)} "
                "(or 1/all/* for every patch, 0/none for none)"
            ]
        )

    def with_problems(self, problems: Iterable[str]) -> "Config":
        """This configuration with ``problems`` added (empty strings, meaning "no problem", are left out)."""
        added = tuple(problem for problem in problems if problem)
        return Config(self.disable_all, self.disabled, self.strict, self.problems + added) if added else self


def read_config() -> Config:
    raw = os.environ.get(DISABLE_ENV, "").strip()
    disable_all = raw.lower() in DISABLE_ALL
    listed = not disable_all and raw.lower() not in DISABLE_NONE
    names = frozenset(normalise_name(p) for p in raw.split(",") if p.strip()) if listed else frozenset()
    strict, problem = read_switch(STRICT_ENV)
    return Config(disable_all=disable_all, disabled=names, strict=strict, problems=(problem,) if problem else ())


_warned: set = globals().get("_warned", set())


def warn_once(problems: Iterable[str]) -> None:
    """Log each configuration problem once per process: the settings are re-read at every apply and report."""
    for problem in problems:
        if problem not in _warned:
            _warned.add(problem)
            logger.warning("trt_compat: %s", problem)

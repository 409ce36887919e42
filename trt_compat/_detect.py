"""Installed versions, read from package metadata so that nothing heavy is imported to learn them.

Versions are parsed here (PEP 440's public version scheme) rather than with ``packaging``: trt_compat has no
dependency, so no missing or broken third-party package can stop it from deciding what to patch.
"""

import re
import sys
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

# Both distributions install the `torch_tensorrt` import package; the first one found wins.
TORCH_TENSORRT_DISTRIBUTIONS = ("torch-tensorrt", "torch-tensorrt-rtx")
TORCH_DISTRIBUTIONS = ("torch",)
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-rtx")
TARGET_MODULE = "torch_tensorrt"

_PEP440 = re.compile(
    r"""^\s*v?
    (?:(?P<epoch>[0-9]+)!)?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?P<pre>[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?[0-9]*)?
    (?P<post>(?:-[0-9]+)|(?:[-_.]?(?:post|rev|r)[-_.]?[0-9]*))?
    (?P<dev>[-_.]?dev[-_.]?[0-9]*)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    \s*$""",
    re.VERBOSE | re.IGNORECASE,
)


class Version(NamedTuple):
    epoch: int
    release: Tuple[int, ...]
    prerelease: bool  # an alpha, beta, release candidate or dev build
    postrelease: bool
    local: Optional[str]


def parse_version(text: Optional[str]) -> Optional[Version]:
    """A PEP 440 version, or None when ``text`` is not one."""
    match = _PEP440.match(text or "")
    if match is None:
        return None
    return Version(
        int(match["epoch"] or 0),
        tuple(int(p) for p in match["release"].split(".")),
        bool(match["pre"] or match["dev"]),
        bool(match["post"]),
        match["local"],
    )


def release_of(version: Optional[str]) -> Optional[Tuple[int, ...]]:
    """The release tuple a version string belongs to: ``2.6.0.dev20250101+cu124`` -> (2, 6, 0).

    A nightly or release candidate of X.Y.Z is treated as X.Y.Z: it is built from the branch that becomes X.Y.Z,
    so it carries (or lacks) the same upstream fixes far more often than those of the release before it.
    A version with an epoch (``1!2.5.0``) belongs to another numbering scheme: None, like an unparseable one.
    """
    parsed = parse_version(version)
    if parsed is None or parsed.epoch != 0:
        return None
    return parsed.release + (0,) * (3 - len(parsed.release))


_cache: Dict[Tuple[str, ...], Dict[str, Optional[str]]] = {}


def _first_installed(names: Sequence[str]) -> Tuple[Optional[str], Optional[str]]:
    from importlib import metadata

    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def installed_versions() -> Dict[str, Optional[str]]:
    """Versions as the metadata spells them, e.g. ``2.6.0.dev20250101+cu124``; None when not installed.

    Metadata look-ups scan every sys.path entry (tens of milliseconds each), so the answer is kept for as long as
    sys.path is unchanged.
    """
    key = tuple(sys.path)
    if key not in _cache:
        tt_dist, tt_version = _first_installed(TORCH_TENSORRT_DISTRIBUTIONS)
        _cache.clear()
        _cache[key] = {
            "torch_tensorrt": tt_version,
            "torch_tensorrt_distribution": tt_dist,
            "torch": _first_installed(TORCH_DISTRIBUTIONS)[1],
            "tensorrt": _first_installed(TENSORRT_DISTRIBUTIONS)[1],
        }
    return dict(_cache[key])


def imported_target() -> Optional[object]:
    """The torch_tensorrt module if it is imported (``sys.modules[name] = None`` blocks an import: not imported)."""
    return sys.modules.get(TARGET_MODULE)


def target_version() -> Tuple[Optional[str], str]:
    """torch_tensorrt's version and where it was read: ``"metadata"``, ``"module"`` (a source tree or an unpacked
    build without package metadata says its version in ``__version__``) or ``""`` (not installed)."""
    version = installed_versions()["torch_tensorrt"]
    if version is not None:
        return version, "metadata"
    module = imported_target()
    found = getattr(module, "__version__", None) if module is not None else None
    return (str(found), "module") if found else (None, "")

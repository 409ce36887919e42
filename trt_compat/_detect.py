"""Installed versions, read from package metadata so that nothing heavy is imported to learn them."""
from importlib import metadata
from typing import Dict, Optional, Sequence, Tuple

# Both distributions install the `torch_tensorrt` import package; the first one found wins.
TORCH_TENSORRT_DISTRIBUTIONS = ("torch-tensorrt", "torch-tensorrt-rtx")
TORCH_DISTRIBUTIONS = ("torch",)
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-rtx")


def _first_installed(names: Sequence[str]) -> Tuple[Optional[str], Optional[str]]:
    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def installed_versions() -> Dict[str, Optional[str]]:
    """Versions as the metadata spells them, e.g. ``2.6.0.dev20250101+cu124``; None when not installed."""
    tt_dist, tt_version = _first_installed(TORCH_TENSORRT_DISTRIBUTIONS)
    return {
        "torch_tensorrt": tt_version,
        "torch_tensorrt_distribution": tt_dist,
        "torch": _first_installed(TORCH_DISTRIBUTIONS)[1],
        "tensorrt": _first_installed(TENSORRT_DISTRIBUTIONS)[1],
    }


def release_of(version: Optional[str]) -> Optional[Tuple[int, ...]]:
    """The release tuple a version string belongs to: ``2.6.0.dev20250101+cu124`` -> (2, 6, 0).

    A nightly or release candidate of X.Y.Z is treated as X.Y.Z: it is built from the branch that becomes X.Y.Z,
    so it carries (or lacks) the same upstream fixes far more often than those of the release before it.
    """
    if not version:
        return None
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(version).release
    except InvalidVersion:
        return None
    return tuple(release) + (0,) * (3 - len(release))

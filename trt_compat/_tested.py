"""The Torch-TensorRT releases trt_compat has been tested against, and what the report says about the rest.

TESTED_RELEASES lists the releases whose row in the compatibility matrix (`nox -t matrix`, see
noxfile.py and compat/TABLE.md) passed; tests/unit/test_untested_release.py checks it against the
rows marked verified in the release registry (tests/harness/releases.py). Any other release is "untested":
each patch is still decided by its version range and then by its own feature check (a target that moved is
skipped with a reason), so a newer release gets the fixes whose targets are still there.
"""

from typing import Optional, Tuple

from ._detect import parse_version

TESTED_RELEASES: Tuple[Tuple[int, int, int], ...] = (
    (2, 2, 0),
    (2, 3, 0),
    (2, 4, 0),
    (2, 5, 0),
    (2, 6, 0),
    (2, 6, 1),
    (2, 7, 0),
    (2, 8, 0),
    (2, 9, 0),
    (2, 10, 0),
    (2, 11, 0),
    (2, 12, 0),
    (2, 12, 1),
    (2, 13, 0),
    (2, 14, 0),
)

TESTED = "tested"
UNTESTED = "untested"
UNKNOWN = "unknown"


def release_status(version: Optional[str], release: Optional[Tuple[int, ...]]) -> str:
    """ "tested", "untested" or "unknown" (no torch-tensorrt, or a version that cannot be parsed).

    A nightly or release candidate counts as its release for the patch decisions, but it is not the
    wheel the matrix ran, so it is untested; a local build tag (``2.14.0+cu130``) is the same release.
    """
    parsed = parse_version(version)
    if parsed is None or release is None:
        return UNKNOWN
    if parsed.prerelease or parsed.postrelease:
        return UNTESTED
    return TESTED if tuple(release[:3]) in TESTED_RELEASES else UNTESTED


def newest_tested() -> str:
    return ".".join(map(str, max(TESTED_RELEASES)))

"""What the offline harness needs to know about each Torch-TensorRT release.

One row per released Torch-TensorRT the compatibility matrix covers (noxfile.py: one session per
row). The rows are data, read by `make_env.py` (to build a venv), `activate.py` (to prepare a test
process) and the matrix, so that adding a release is an edit here rather than a new branch of code.

Sources of each field:
- ``torch``: the torch release the wheel's ``torch`` requirement resolves to: the newest torch its
  METADATA allows. Pinned exactly so every machine builds the same venv.
- ``torchvision``: the torchvision release built against that torch: its models (random weights, never
  downloaded) are the real-world test inputs.
- ``tensorrt``: what the stand-in reports as ``tensorrt.__version__``. The real ``tensorrt`` Python
  module comes from the ``tensorrt-*-bindings`` distribution, so this is the lowest version that wheel
  pin allows (or the plain ``tensorrt`` pin on releases that have no bindings pin). ``activate.py``
  cross-checks it against the installed wheel's metadata, so a wrong row fails loudly.
- ``numpy``: measured constraint (torch builds of that era against numpy 1.x).
- ``runtime_deps``: the wheel's own ``Requires-Dist`` lines (METADATA), minus torch, the TensorRT
  distributions (stood in for) and extras. Needed because the wheel is installed with ``--no-deps``:
  otherwise pip would try to pull the multi-GB TensorRT native wheels that cannot work here.
- ``standin_extras``: per-release stand-in pieces under ``standin_extras/`` (see its README), found by
  building and importing the release: what its import reaches unconditionally that the base stand-in
  must not provide for every release.
- ``move_aside``: globs, relative to the installed ``torch_tensorrt`` package, of native files that must
  not be loaded: they link against libnvinfer / libcudart, which are absent, and torch_tensorrt only
  tries to load them when the files exist.

This module is stdlib only: make_env.py imports it with whatever python3 is on the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Release:
    line: str  # key of the row: the release, e.g. "2.4.0"
    wheels: Tuple[str, ...]  # torch-tensorrt versions this row covers; the first is the default
    torch: str  # exact torch version to install
    torchvision: str  # the torchvision built for that torch (real models for the tests; installed with --no-deps)
    tensorrt: str  # stand-in tensorrt.__version__
    numpy: str  # pip requirement for numpy
    runtime_deps: Tuple[str, ...]  # wheel METADATA requirements, without torch / TensorRT / extras
    move_aside: Tuple[str, ...]  # globs under site-packages/torch_tensorrt
    post_lowering_signature: str  # second argument of lowering passes: "sample_inputs" | "none" | "settings"
    dryrun: str  # "native" | "cpu_block_inputs" (test must keep block inputs on CPU) | "absent"
    has_view_to_reshape: bool  # pass present in ATEN_POST_LOWERING_PASSES
    # Full pip requirement for torch when `torch==<torch>` is ambiguous on this machine ("" = that one).
    torch_requirement: str = ""
    # Optional stand-in pieces (tests/harness/standin_extras/<name>) this release cannot import without.
    standin_extras: Tuple[str, ...] = ()
    needs: Tuple[str, ...] = ()  # extra steps this release needs (prose; see HARNESS-NOTES)
    verified: bool = False  # its matrix run passed tests/integration/test_defects.py and test_matrix.py

    @property
    def version_tuple(self) -> Tuple[int, ...]:
        return parse_version(self.wheels[0])


def parse_version(text: str) -> Tuple[int, ...]:
    """'2.4.0' -> (2, 4, 0); ignores local/pre-release suffixes ('2.14.0+cu130' -> (2, 14, 0))."""
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


_COMMON_OLD = ("packaging>=23", "typing-extensions>=4.7.0")
_LIB_SO = ("lib/*.so",)
# 2.3/2.4 also load torch_tensorrt/_C*.so, which calls torch.ops.tensorrt.get_multi_device_safe_mode
# at import; that op lives in the moved-aside libtorchtrt, so _C must go too.
_LIB_AND_C_SO = ("lib/*.so", "_C*.so")


RELEASES: Dict[str, Release] = {
    r.line: r
    for r in (
        Release(
            line="2.2.0",
            wheels=("2.2.0",),
            torch="2.2.2",
            torchvision="0.17.2",
            tensorrt="8.6.1",
            numpy="numpy<2",
            runtime_deps=_COMMON_OLD + ("numpy",),
            # The wheel also ships torch_tensorrt.libs/libcudart-*.so, but only _C loads it.
            move_aside=_LIB_AND_C_SO,
            post_lowering_signature="sample_inputs",
            dryrun="absent",
            has_view_to_reshape=True,
            standin_extras=("torch_tensorrt_C",),
            needs=(
                "import reaches torch_tensorrt._C and torch_tensorrt._C.ts unconditionally, and loads "
                "lib/libtorchtrt.so with torch.ops.load_library: stand-in modules for _C / _C.ts "
                "(tests/harness/standin_extras/torch_tensorrt_C) and the two tensorrt:: safe-mode ops",
                "no dryrun option: the tests run at partition level only",
                "view_to_reshape leaves the new reshape nodes without meta['val'] (different defect shape)",
            ),
            verified=True,
        ),
        Release(
            line="2.3.0",
            wheels=("2.3.0",),
            torch="2.3.1",
            torchvision="0.18.1",
            tensorrt="10.0.1",
            numpy="numpy<2",
            runtime_deps=_COMMON_OLD + ("numpy",),
            move_aside=_LIB_AND_C_SO,
            post_lowering_signature="sample_inputs",
            dryrun="cpu_block_inputs",
            has_view_to_reshape=True,
            needs=(
                "#3185 shows as AssertionError 'Input max_pool2d_default does not contain metadata' "
                "(empty meta dict), not the tuple ValueError",
                "_pretraced_backend swallows AssertionError, so a dryrun compile falls back to eager "
                "instead of failing",
            ),
            verified=True,
        ),
        Release(
            line="2.4.0",
            wheels=("2.4.0",),
            torch="2.4.1",
            torchvision="0.19.1",
            tensorrt="10.1.0",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("numpy",),
            move_aside=_LIB_AND_C_SO,
            post_lowering_signature="sample_inputs",
            dryrun="cpu_block_inputs",
            has_view_to_reshape=True,
            verified=True,
        ),
        Release(
            line="2.5.0",
            wheels=("2.5.0",),
            torch="2.5.1",
            torchvision="0.20.1",
            tensorrt="10.3.0",
            numpy="numpy<2",
            runtime_deps=_COMMON_OLD + ("numpy",),
            move_aside=_LIB_SO,
            post_lowering_signature="none",
            dryrun="native",
            has_view_to_reshape=True,
            verified=True,
        ),
        Release(
            line="2.6.0",
            wheels=("2.6.0",),
            torch="2.6.0",
            torchvision="0.21.0",
            # The wheel pins the `tensorrt` meta-package at >=10.7.0.post1, but the module's own
            # version comes from tensorrt-cu12-bindings (>=10.7.0), which is what `tensorrt.__version__` says.
            tensorrt="10.7.0",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("numpy",),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=True,
            standin_extras=("qdp_plugin",),
            needs=(
                "dynamo.conversion.plugins imports tensorrt.plugin and tensorrt.plugin._lib.QDP_REGISTRY "
                "unconditionally: stand-in package tests/harness/standin_extras/qdp_plugin",
            ),
            verified=True,
        ),
        Release(
            line="2.6.1",
            wheels=("2.6.1",),
            torch="2.6.0",
            torchvision="0.21.0",
            tensorrt="10.7.0",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("numpy",),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=True,
            standin_extras=("qdp_plugin",),
            needs=("as 2.6.0: the tensorrt.plugin stand-in",),
            verified=True,
        ),
        Release(
            line="2.7.0",
            wheels=("2.7.0",),
            torch="2.7.1",
            torchvision="0.22.1",
            tensorrt="10.9.0",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("numpy",),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=False,
            # 2.8 moved these imports into functions and gates the feature on find_spec("tensorrt.plugin").
            standin_extras=("qdp_plugin",),
            needs=("as 2.6.x: dynamo.conversion.plugins imports tensorrt.plugin at import time",),
            verified=True,
        ),
        Release(
            line="2.8.0",
            wheels=("2.8.0",),
            torch="2.8.0",
            torchvision="0.23.0",
            tensorrt="10.12.0",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("dllist", "numpy"),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=False,
            verified=True,
        ),
        Release(
            line="2.9.0",
            wheels=("2.9.0",),
            torch="2.9.1",
            torchvision="0.24.1",
            tensorrt="10.13.0",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("dllist", "numpy"),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=False,
            verified=True,
        ),
        Release(
            line="2.10.0",
            wheels=("2.10.0",),
            torch="2.10.0",
            torchvision="0.25.0",
            tensorrt="10.14.1",
            numpy="numpy",
            # METADATA also pins nvidia-cuda-runtime-cu13==0.0.0a0, a CUDA native distribution like
            # the TensorRT ones: not installed (torch brings the CUDA runtime it was built with).
            runtime_deps=_COMMON_OLD + ("dllist", "psutil", "numpy"),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=False,
            verified=True,
        ),
        Release(
            line="2.11.0",
            wheels=("2.11.0",),
            torch="2.11.0",
            torchvision="0.26.0",
            tensorrt="10.15.1",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("dllist", "psutil", "numpy"),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=False,
            verified=True,
        ),
        Release(
            line="2.12.0",
            wheels=("2.12.0",),
            torch="2.12.1",
            torchvision="0.27.1",
            tensorrt="10.16.1",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("filelock", "dllist", "psutil", "numpy"),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=False,
            needs=(
                "METADATA also requires executorch>=1.2.0 on Linux (not as an extra); only "
                "torch_tensorrt.executorch imports it, and the compiler path runs without it",
            ),
            verified=True,
        ),
        Release(
            line="2.12.1",
            wheels=("2.12.1",),
            torch="2.12.1",
            torchvision="0.27.1",
            tensorrt="10.16.1",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("filelock", "dllist", "psutil", "numpy"),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=False,
            needs=("as 2.12.0: executorch is required on Linux but not needed by the compiler path",),
            verified=True,
        ),
        Release(
            line="2.13.0",
            wheels=("2.13.0",),
            torch="2.13.0",
            torchvision="0.28.0",
            # The machine's local wheel folder holds the CPU build 2.13.0+cpu (for the unit tests),
            # which `torch==2.13.0` also matches; torch_tensorrt needs the CUDA build.
            torch_requirement="torch==2.13.0,!=2.13.0+cpu",
            tensorrt="11.0.0",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("filelock", "dllist", "psutil", "numpy"),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=False,
            verified=True,
        ),
        Release(
            line="2.14.0",
            wheels=("2.14.0",),
            torch="2.14.1",
            torchvision="0.29.1",
            tensorrt="11.1.0",
            numpy="numpy",
            runtime_deps=_COMMON_OLD + ("filelock", "dllist", "psutil", "numpy"),
            move_aside=_LIB_SO,
            post_lowering_signature="settings",
            dryrun="native",
            has_view_to_reshape=False,
            verified=True,
        ),
    )
}


def lookup(version: str) -> Release:
    """Row for a torch-tensorrt version ('2.4.0', '2.6.1', '2.14.0+cu130', or a line key like '2.6.x')."""
    if version in RELEASES:
        return RELEASES[version]
    wanted = parse_version(version)
    for release in RELEASES.values():
        if any(parse_version(w) == wanted for w in release.wheels):
            return release
    known = ", ".join(RELEASES)
    raise KeyError(f"torch-tensorrt {version} is not in tests/harness/releases.py (known: {known})")


def wheel_version(requested: str) -> str:
    """The torch-tensorrt version to install for a request: a line key picks the row's default wheel."""
    release = lookup(requested)
    return release.wheels[0] if requested == release.line and requested not in release.wheels else requested


def find(version: str) -> Optional[Release]:
    try:
        return lookup(version)
    except KeyError:
        return None

"""Prepare the running process so the real torch_tensorrt imports on a machine without a GPU.

    from tests.harness import activate; activate.prepare(); import torch_tensorrt

Used by tests/integration/conftest.py, by the subprocess tests (which import trt_compat first, to
exercise its post-import hook) and by make_env.py's smoke test. It stands in for exactly two things:

1. the `tensorrt` Python module (tests/harness/standin), whose native library cannot be installed here;
2. three GPU queries torch_tensorrt makes while setting up its default device:
   torch.cuda.current_device, get_device_capability, get_device_name (without a GPU they raise).

plus, only for the releases whose row lists them in `standin_extras` (tests/harness/standin_extras):
`tensorrt.plugin` (2.6-2.7 import it unconditionally) and, for 2.2.0, the native extension
`torch_tensorrt._C` with what its native library would register.

torch and torch_tensorrt themselves are the real, installed packages, untouched in memory (the
venv builder only moved their native .so files aside). prepare() does not import torch_tensorrt: the
caller decides when, so that import hooks registered before it still see the real import.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any, Dict

HARNESS = Path(__file__).resolve().parent
STANDIN = HARNESS / "standin"
EXTRAS = HARNESS / "standin_extras"
VERSION_ENV = "TRT_COMPAT_HARNESS_TENSORRT_VERSION"
# Read by standin/tensorrt/__init__.py: extra folders of the stand-in `tensorrt` package.
TENSORRT_PATH_ENV = "TRT_COMPAT_HARNESS_TENSORRT_PATH"
# What the replaced get_device_capability reports: an Ada GPU, recent enough for every code path
# these releases gate on compute capability.
CAPABILITY = (8, 9)
DEVICE_NAME = "trt_compat harness stand-in (no GPU)"

from tests.harness import releases  # noqa: E402


class HarnessUnavailable(RuntimeError):
    """torch_tensorrt is not installed in this interpreter: nothing to test here."""


def installed_wheel() -> str:
    try:
        return importlib.metadata.version("torch-tensorrt")
    except importlib.metadata.PackageNotFoundError:
        raise HarnessUnavailable(
            f"torch-tensorrt is not installed in {sys.executable}; build a venv with "
            "`python3 -m tests.harness.make_env 2.4.0 .venvs/tt-2.4.0` and run pytest with its python"
        ) from None


def unavailable_reason():
    """None when torch-tensorrt is installed here, else why the integration tests cannot run.

    Side-effect free, so test modules can call it at import to skip themselves cleanly.
    """
    try:
        installed_wheel()
    except HarnessUnavailable as exc:
        return str(exc)
    return None


def _bindings_pin() -> str:
    """The wheel's requirement on the distribution that provides the `tensorrt` module."""
    reqs = importlib.metadata.requires("torch-tensorrt") or []
    chosen = ""
    for req in reqs:
        if "extra ==" in req:
            continue
        name = req.split(";")[0].split("(")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
        if name.startswith("tensorrt") and name.endswith("-bindings"):
            return req
        if name == "tensorrt":
            chosen = req
    return chosen


def tensorrt_version(release: releases.Release) -> str:
    """Stand-in version for the installed wheel; the table row must satisfy the wheel's own pin."""
    pin = _bindings_pin()
    if pin:
        from packaging.requirements import Requirement  # a runtime dep of every torch_tensorrt wheel

        req = Requirement(pin.replace("(", "").replace(")", ""))
        if not req.specifier.contains(release.tensorrt, prereleases=True):
            raise RuntimeError(
                f"tests/harness/releases.py says tensorrt {release.tensorrt} for torch-tensorrt "
                f"{release.line}, but the installed wheel requires {pin!r}: fix the table"
            )
    return release.tensorrt


def _install_standin() -> None:
    loaded = sys.modules.get("tensorrt")
    if loaded is not None and not getattr(loaded, "IS_TRT_COMPAT_HARNESS_STANDIN", False):
        # 2.12+ replaces sys.modules["tensorrt"] with a proxy wrapping the module; look through it.
        target = getattr(loaded, "_target_module", None)
        if not getattr(target, "IS_TRT_COMPAT_HARNESS_STANDIN", False):
            raise RuntimeError(
                f"a real tensorrt module is already imported ({loaded!r}); the harness must not shadow it"
            )
    if str(STANDIN) not in sys.path:
        # Front of the path: the stand-in must win over any half-installed tensorrt distribution.
        sys.path.insert(0, str(STANDIN))


def _standin_gpu_queries() -> None:
    import torch

    if getattr(torch.cuda.current_device, "_trt_compat_harness", False):
        return

    def current_device() -> int:
        return 0

    def get_device_capability(device: Any = None):
        return CAPABILITY

    def get_device_name(device: Any = None) -> str:
        return DEVICE_NAME

    for fn in (current_device, get_device_capability, get_device_name):
        fn._trt_compat_harness = True  # type: ignore[attr-defined]
        setattr(torch.cuda, fn.__name__, fn)


def _extend_tensorrt_package(name: str) -> None:
    """Make stand-in subpackages of `tensorrt` (e.g. tensorrt.plugin) importable; before `import tensorrt`."""
    folder = str(EXTRAS / name / "tensorrt")
    present = [p for p in os.environ.get(TENSORRT_PATH_ENV, "").split(os.pathsep) if p]
    if folder not in present:
        os.environ[TENSORRT_PATH_ENV] = os.pathsep.join(present + [folder])


class _TorchTensorRTCFinder:
    """Serves the stand-in torch_tensorrt._C package (its .so was moved aside by make_env.py)."""

    FOLDER = EXTRAS / "torch_tensorrt_C" / "_C"

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torch_tensorrt._C":
            return None
        import importlib.util

        # A package, so that torch_tensorrt._C.ts is found next to it by the ordinary path finder.
        return importlib.util.spec_from_file_location(
            fullname, self.FOLDER / "__init__.py", submodule_search_locations=[str(self.FOLDER)]
        )


_safe_mode_library = None  # keeps the torch.library registration alive


def _standin_torch_tensorrt_c(_name: str) -> None:
    """2.2.0: the native extension torch_tensorrt._C and what its libtorchtrt.so would provide."""
    global _safe_mode_library
    import torch

    if not any(isinstance(f, _TorchTensorRTCFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchTensorRTCFinder())

    if not getattr(torch.ops.load_library, "_trt_compat_harness", False):
        original = torch.ops.load_library

        def load_library(path):
            # torch_tensorrt/__init__.py loads lib/libtorchtrt.so unconditionally; make_env.py moved it
            # aside because it links against the absent TensorRT. Every other library loads as usual.
            if not os.path.exists(path) and Path(path).parent.parent.name == "torch_tensorrt":
                return None
            return original(path)

        load_library._trt_compat_harness = True  # type: ignore[attr-defined]
        torch.ops.load_library = load_library

    if _safe_mode_library is None:
        # runtime/multi_device_safe_mode.py reads this flag at import once torch_tensorrt._C exists;
        # the real ops live in the moved-aside libtorchtrt.so. Off, as the real default.
        library = torch.library.Library("tensorrt", "DEF")
        library.define("get_multi_device_safe_mode() -> bool")
        library.define("set_multi_device_safe_mode(bool mode) -> ()")
        library.impl("get_multi_device_safe_mode", lambda: False, "CompositeExplicitAutograd")
        library.impl("set_multi_device_safe_mode", lambda mode: None, "CompositeExplicitAutograd")
        _safe_mode_library = library


_EXTRAS = {"qdp_plugin": _extend_tensorrt_package, "torch_tensorrt_C": _standin_torch_tensorrt_c}


def prepare() -> Dict[str, Any]:
    """Make `import torch_tensorrt` work in this process; idempotent. Raises HarnessUnavailable."""
    wheel = installed_wheel()
    release = releases.lookup(wheel)
    version = tensorrt_version(release)
    os.environ[VERSION_ENV] = version
    _install_standin()
    for extra in release.standin_extras:
        _EXTRAS[extra](extra)
    _standin_gpu_queries()
    return {
        "wheel": wheel,
        "release": release.line,
        "version_tuple": releases.parse_version(wheel),
        "tensorrt": version,
        "standin_extras": list(release.standin_extras),
        "row": release,
    }


def post_lowering_manager():
    """The imported torch_tensorrt's post-lowering pass manager, by its name on each release:
    ATEN_POST_LOWERING_PASSES from 2.3 on, ATEN_LOWERING_PASSES on 2.2."""
    from torch_tensorrt.dynamo.lowering.passes import _aten_lowering_pass as passes

    return getattr(passes, "ATEN_POST_LOWERING_PASSES", None) or passes.ATEN_LOWERING_PASSES

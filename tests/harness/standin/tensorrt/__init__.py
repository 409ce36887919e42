"""TEST STAND-IN for NVIDIA's `tensorrt` Python module. It is not TensorRT and does nothing.

Why it exists: trt_compat's integration tests run the real Torch-TensorRT Python compiler (lowering,
partitioning, dryrun) on a machine without a GPU, where TensorRT's native library and its Python
bindings cannot be installed. torch_tensorrt imports `tensorrt` at import time and touches many of its
names while defining converters, enums and type hints, but the code paths under test never build an
engine. This module answers every such name with an inert placeholder so that the import succeeds.

It only lives on sys.path when tests/harness/activate.py puts it there. Anything that would really
need TensorRT (building or running an engine) gets a placeholder object back and will fail or do
nothing: tests must not rely on it for behaviour.

Rules, each for a reason:
- `__version__` comes from TRT_COMPAT_HARNESS_TENSORRT_VERSION (set by activate.py from the installed
  wheel's pin), so one stand-in serves every release and version-gated code takes the release's path.
- Any public attribute is a placeholder class, created on first use and cached, so identity holds;
  attributes of a placeholder are placeholders too (`trt.DataType.FLOAT`, `trt.Logger.WARNING`).
- Placeholders compare equal by qualified name, so lookup tables keyed by them behave.
- `tensorrt.tensorrt` is this module itself, as in the real bindings (code does `trt.tensorrt.X`).
- Names starting with "_" are NOT invented: Python's import machinery and torch_tensorrt probe private
  and dunder names with hasattr/getattr and must see them as absent (e.g. 2.14 reads `_package_name`).
- Names whose mere presence switches a feature on are NOT invented either (see _ABSENT).
- No `tensorrt.plugin` subpackage: on 2.8+ its presence switches the QDP plugin feature on. The
  releases that import it unconditionally (2.6-2.7) get one from ../standin_extras/qdp_plugin, which
  activate.py adds to this package's __path__ through TRT_COMPAT_HARNESS_TENSORRT_PATH.
"""
import os
import sys

__version__ = os.environ.get("TRT_COMPAT_HARNESS_TENSORRT_VERSION", "0.0.0")

# Marker so the harness (and anyone debugging) can tell this module from real TensorRT.
IS_TRT_COMPAT_HARNESS_STANDIN = True

# How a fresh interpreter is prepared the way this one was (module, function, the folder to import the module from):
# trt_compat.probing's serving process, which loads a saved program without trt_compat, runs it before importing
# torch_tensorrt.
PREPARE_PROCESS = (
    "tests.harness.activate",
    "prepare",
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))),
)

# hasattr(tensorrt, "tensorrt_rtx") selects the TensorRT-RTX code paths in 2.12+'s proxy module;
# "plugin" must stay a (missing) submodule, not a placeholder attribute.
_ABSENT = frozenset({"tensorrt_rtx", "plugin"})

tensorrt = sys.modules[__name__]

__path__ += [p for p in os.environ.get("TRT_COMPAT_HARNESS_TENSORRT_PATH", "").split(os.pathsep) if p]


class _PlaceholderMeta(type):
    """Metaclass of every placeholder: unknown attributes become further placeholders."""

    def __getattr__(cls, name):
        if name.startswith("_"):
            raise AttributeError(name)
        child = _placeholder(f"{cls.__qualname__}.{name}")
        type.__setattr__(cls, name, child)
        return child

    def __eq__(cls, other):
        if isinstance(other, _PlaceholderMeta):
            return cls.__qualname__ == other.__qualname__
        return NotImplemented

    def __ne__(cls, other):
        result = cls.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(cls):
        return hash(("tensorrt-standin", cls.__qualname__))

    def __repr__(cls):
        return f"<tensorrt stand-in {cls.__qualname__}>"


class _PlaceholderBase(metaclass=_PlaceholderMeta):
    """Instances accept any constructor arguments and answer attribute reads with placeholders."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(type(self), name)


def _placeholder(qualname):
    return _PlaceholderMeta(qualname.rsplit(".", 1)[-1], (_PlaceholderBase,),
                            {"__qualname__": qualname, "__module__": __name__})


def __getattr__(name):
    if name.startswith("_") or name in _ABSENT:
        raise AttributeError(f"module {__name__!r} (test stand-in) has no attribute {name!r}")
    value = _placeholder(name)
    globals()[name] = value
    return value

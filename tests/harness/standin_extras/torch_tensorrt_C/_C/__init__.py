"""TEST STAND-IN for `torch_tensorrt._C`, Torch-TensorRT 2.2.0's native extension; see ../../README.md.

The real module is a compiled extension linked against TensorRT and CUDA, which cannot load on this
machine. 2.2.0 imports it unconditionally (TorchScript frontend, device helpers, build info); the
dynamo compiler paths under test never call into it. Any public name is an inert placeholder, made
by the `tensorrt` stand-in's placeholder factory.
"""
import tensorrt as _tensorrt_standin

IS_TRT_COMPAT_HARNESS_STANDIN = True


def __getattr__(name):
    # Dunder names stay absent for the import machinery; private names are real _C functions
    # (2.2.0's torch_tensorrt.logging imports e.g. _get_is_colored_output_on).
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} (test stand-in) has no attribute {name!r}")
    value = _tensorrt_standin._placeholder(f"_C.{name}")
    globals()[name] = value
    return value

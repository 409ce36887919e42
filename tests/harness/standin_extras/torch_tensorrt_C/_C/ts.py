"""TEST STAND-IN for `torch_tensorrt._C.ts` (2.2.0's TorchScript frontend bindings); inert placeholders."""
import tensorrt as _tensorrt_standin

IS_TRT_COMPAT_HARNESS_STANDIN = True


def __getattr__(name):
    # Dunder names stay absent for the import machinery; private names are real _C functions
    # (2.2.0's torch_tensorrt.logging imports e.g. _get_is_colored_output_on).
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} (test stand-in) has no attribute {name!r}")
    value = _tensorrt_standin._placeholder(f"_C.ts.{name}")
    globals()[name] = value
    return value

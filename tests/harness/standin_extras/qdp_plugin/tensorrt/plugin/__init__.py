"""TEST STAND-IN for `tensorrt.plugin` (TensorRT's Python plugin API); see ../../../README.md.

Torch-TensorRT 2.6.x-2.7.x import it at import time and only use its names inside functions that
generate plugins, which the tested compiler paths never call. Any public name is a placeholder.
"""
import tensorrt as _tensorrt


def __getattr__(name):
    return getattr(_tensorrt, name)

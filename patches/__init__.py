"""trt_compat: fixes for upstream Torch-TensorRT defects, one module per defect (installed as trt_compat.patches).

The first line above is also how trt_compat recognises this folder in a source checkout (trt_compat.CHECKOUT_MARKER).
"""

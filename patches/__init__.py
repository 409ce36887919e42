"""Fixes for upstream Torch-TensorRT defects, one module per defect (installed as trt_compat.patches)."""

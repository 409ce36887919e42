"""Can this interpreter build real TensorRT engines? ``unavailable_reason()`` says why not (None: it can).

Plain module (no pytest), so tests/integration can check that the offline harness is recognised.
Nothing here imports torch_tensorrt: the GPU tests import trt_compat first, as a deployment does.
"""

import importlib.util
from pathlib import Path

HARNESS_STANDIN = Path(__file__).resolve().parents[1] / "harness" / "standin"


def tensorrt_problem():
    """None for NVIDIA's real `tensorrt` module, else what is wrong with the importable one."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the TensorRT Python package (tensorrt) is not installed"
    try:
        import tensorrt
    except Exception as exc:  # e.g. bindings present but libnvinfer missing
        return f"import tensorrt failed: {type(exc).__name__}: {exc}"
    # Torch-TensorRT 2.12+ replaces sys.modules["tensorrt"] with a proxy around the real module.
    target = getattr(tensorrt, "_target_module", None) or tensorrt
    origin = Path(getattr(target, "__file__", None) or "/").resolve()
    if getattr(target, "IS_TRT_COMPAT_HARNESS_STANDIN", False) or HARNESS_STANDIN in origin.parents:
        return (
            "tensorrt is trt_compat's offline-harness stand-in (tests/harness/standin), not TensorRT: "
            "it cannot build engines"
        )
    return None


def unavailable_reason():
    problems = []
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        problems.append("no CUDA device (torch.cuda.is_available() is False)")
    if importlib.util.find_spec("torch_tensorrt") is None:
        problems.append("torch-tensorrt is not installed")
    trt = tensorrt_problem()
    if trt:
        problems.append(trt)
    return "; ".join(problems) or None

"""The GPU tier: real TensorRT engines, compared with eager PyTorch. Needs a CUDA GPU, TensorRT and Torch-TensorRT.

    python -m pytest tests/gpu -m gpu -v

Registers the `gpu` marker here (the project has no pytest.ini, and the fast suite never collects this
folder). Everything skips, with the reason, where it cannot run: no CUDA device, no torch-tensorrt, or a
`tensorrt` module that is not NVIDIA's, such as the offline harness's stand-in (tests/harness/standin).
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "integration"):  # gpu_env, and the shared smoke models
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: builds and runs real TensorRT engines (needs CUDA and TensorRT)")

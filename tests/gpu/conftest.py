"""The GPU tier: real TensorRT engines, compared with eager PyTorch. Needs a CUDA GPU, TensorRT and Torch-TensorRT.

    python -m pytest tests/gpu -m gpu -v

Registers the `gpu` marker here (the project has no pytest.ini, and the fast suite never collects this
folder). Everything skips, with the reason, where it cannot run: no CUDA device, no torch-tensorrt, or a
`tensorrt` module that is not NVIDIA's, such as the offline harness's stand-in (tests/harness/standin).
"""

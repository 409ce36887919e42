"""End to end on a GPU: the three smoke models compiled into real TensorRT engines with trt_compat, against eager.

What this adds to the CPU suites: they prove the graphs trt_compat hands to TensorRT are well formed (Inputs
match the tensors that flow, partitioning succeeds); only here are those graphs built into engines and run.

`import trt_compat` comes first and torch_tensorrt is imported inside the fixture, as a deployment does.
"""

import pytest

from tests.gpu import gpu_env

_REASON = gpu_env.unavailable_reason()
if _REASON:
    pytest.skip(f"GPU tier not runnable here: {_REASON}", allow_module_level=True)

import torch  # noqa: E402

import trt_compat  # noqa: E402,F401  (before torch_tensorrt: its post-import hook applies the patches)
from tests.helpers.models import SMOKE_MODELS, smoke_model  # noqa: E402

pytestmark = pytest.mark.gpu

# FP32 engines; TensorRT may still pick TF32 kernels for convolutions and matmuls (10-bit mantissa).
TOLERANCE = {"rtol": 1e-2, "atol": 1e-2}


@pytest.fixture(scope="module")
def torch_tensorrt():
    import torch_tensorrt

    report = trt_compat.report_dict()
    failed = [p for p in report["patches"] if p["state"] in ("failed", "skipped")]
    assert not failed, f"trt_compat could not apply every needed patch: {failed}"
    return torch_tensorrt


def engines_in(module):
    """Submodules that run TensorRT engines (the C++ or the Python runtime's module class)."""
    return [name for name, sub in module.named_modules() if "TensorRTModule" in type(sub).__name__]


def on_gpu(name):
    model, x = smoke_model(name)
    return model.cuda(), x.cuda()


@pytest.mark.parametrize("name", list(SMOKE_MODELS))
def test_dynamo_compile_matches_eager(torch_tensorrt, name):
    model, x = on_gpu(name)
    with torch.no_grad():
        expected = model(x)
        compiled = torch_tensorrt.compile(
            model, ir="dynamo", inputs=[x], min_block_size=1, enabled_precisions={torch.float32}
        )
        assert engines_in(compiled), "no TensorRT engine was built"
        torch.testing.assert_close(compiled(x), expected, **TOLERANCE)


@pytest.mark.parametrize("name", list(SMOKE_MODELS))
def test_torch_compile_backend_matches_eager(torch_tensorrt, name):
    model, x = on_gpu(name)
    torch._dynamo.reset()
    try:
        # pass_through_build_failures: a failed engine build must fail the test, not fall back to eager.
        compiled = torch.compile(
            model,
            backend="torch_tensorrt",
            options={"min_block_size": 1, "pass_through_build_failures": True, "enabled_precisions": {torch.float32}},
        )
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), **TOLERANCE)
    finally:
        torch._dynamo.reset()


def test_verify_fixes_every_defect_with_real_engines(torch_tensorrt):
    """`trt-compat verify` on this machine: every patch's reproducer with real TensorRT engines, against eager."""
    from trt_compat.verify import verify

    report = verify()
    assert report.mode.startswith("TensorRT engines"), report.mode
    assert report.ok, str(report)


def test_googlenet_through_real_engines_matches_eager(torch_tensorrt):
    """convertible_pools on real engines: GoogLeNet's ceil-mode pools rewritten (one engine in dryrun, checked by the
    integration suite), built by TensorRT and compared with eager."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval().cuda()
    x = torch.randn(1, 3, 224, 224, device="cuda")
    torch._dynamo.reset()
    try:
        compiled = torch.compile(
            model,
            backend="torch_tensorrt",
            options={"min_block_size": 1, "pass_through_build_failures": True, "enabled_precisions": {torch.float32}},
        )
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), **TOLERANCE)
    finally:
        torch._dynamo.reset()

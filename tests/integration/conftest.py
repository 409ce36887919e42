"""Integration tests against the real Torch-TensorRT wheel installed in the running interpreter.

Run with a venv built by `python -m tests.harness.make_env`, e.g.
    .venvs/tt-2.4.0/bin/python -m pytest tests/integration -q

Order matters here, so this file does it at import, before pytest imports any test module:
1. tests/harness/activate.prepare(): the stand-in `tensorrt` module goes on sys.path with the version the
   installed wheel pins, and the three torch.cuda queries torch_tensorrt needs without a GPU are replaced;
2. torch_tensorrt is imported -- the real, unpatched upstream package;
3. trt_compat is imported, which patches it at once, and reverted at once: the test modules import trt_compat
   (its patch modules hold the defects' reproducers), and the "without trt_compat" tests must see pristine
   upstream code. Revert restores the very same objects (tests/integration/test_patch_contract.py checks it).
   Tests that want the fixes take the `shim` fixture, which applies them and reverts them afterwards; the
   `upstream` fixture makes sure nothing is applied.

Without torch-tensorrt installed (e.g. the CPU unit-test venv) nothing is prepared and each test
module skips itself with the reason from activate.unavailable_reason(): a skip raised in a conftest
given on the command line aborts pytest instead of skipping.
"""

import logging
import sys

import pytest

from tests.harness import activate

UNAVAILABLE = activate.unavailable_reason()
HARNESS_INFO = None
if UNAVAILABLE is None:
    HARNESS_INFO = activate.prepare()
    import torch_tensorrt  # noqa: E402,F401  (real upstream, imported before any test module)

    import trt_compat  # noqa: E402

    trt_compat.revert()

    # torch keeps its structured-trace logger at DEBUG (it checks that level before building trace
    # payloads) and lets it propagate, so pytest's log capture would print thousands of empty
    # "DEBUG torch.__trace" lines under every failure. Not propagating changes no torch behaviour.
    logging.getLogger("torch.__trace").propagate = False


def pytest_report_header(config):
    if HARNESS_INFO is None:
        return [f"trt_compat harness: inactive ({UNAVAILABLE})"]
    import torch

    return [
        f"trt_compat harness: torch-tensorrt {HARNESS_INFO['wheel']} (row {HARNESS_INFO['release']}), "
        f"torch {torch.__version__}, tensorrt TEST STAND-IN reporting {HARNESS_INFO['tensorrt']}, "
        f"no GPU (device name: {torch.cuda.get_device_name()!r})"
    ]


@pytest.fixture(scope="session")
def harness_info():
    return HARNESS_INFO


@pytest.fixture(scope="session")
def release(harness_info):
    """Installed torch-tensorrt as a tuple, e.g. (2, 4, 0)."""
    return harness_info["version_tuple"]


@pytest.fixture(scope="session")
def release_row(harness_info):
    """The tests/harness/releases.py row of the installed wheel."""
    return harness_info["row"]


def _applied_patches():
    if "trt_compat" not in sys.modules:
        return []
    report = sys.modules["trt_compat"].report_dict()
    return [p["name"] for p in report["patches"] if p["state"] == "applied"]


@pytest.fixture(scope="session")
def stated_ranges():
    """Each patch's range as its integration tests state it, independently of the patch (see test_defects)."""
    from tests.helpers.upstream import stated_ranges

    return stated_ranges()


@pytest.fixture
def upstream():
    """For "without trt_compat" tests: pristine upstream (a test module importing trt_compat patches the imported
    torch_tensorrt at once, so whatever is applied is reverted first), and a failure if it cannot be."""
    if "trt_compat" in sys.modules:
        sys.modules["trt_compat"].revert()
    applied = _applied_patches()
    assert not applied, f"trt_compat patches still applied, upstream is not pristine: {applied}"
    yield


@pytest.fixture
def shim():
    """trt_compat applied to the imported torch_tensorrt for the test, reverted afterwards."""
    import trt_compat

    report = trt_compat.apply()
    try:
        yield report
    finally:
        trt_compat.revert()
        # A patch left behind would make every later "without" test meaningless.
        assert not _applied_patches(), "trt_compat.revert() left patches applied"


@pytest.fixture
def fresh_dynamo():
    """torch.compile caches per code object; every compile test starts and ends clean."""
    import torch

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def dryrun_on_cpu(monkeypatch, release_row):
    """Make `dryrun` compiles run on this GPU-less machine.

    2.3/2.4's compile_module runs every accelerated block once to learn its output shapes, on the
    target device (`get_torch_inputs(inputs, cuda:0)`), which fails here with "Found no NVIDIA
    driver" -- and _pretraced_backend then silently falls back to eager, hiding everything the test
    is about. Only the device of those sample tensors is changed, through the name _compiler looks up.

    2.10.0's compile_module tells each block that computes a graph output not to own its output tensors
    (`set_output_tensors_as_unowned`, a method of the TensorRT engine module); in dryrun no engine is built and the
    block is still a GraphModule, so the compile dies with an AttributeError. GraphModule gets that method as a
    no-op here, as trt_compat.probing.Probe does for its compiles (nothing else calls it).
    """
    if release_row.dryrun == "absent":
        pytest.skip(f"torch-tensorrt {release_row.line} has no dryrun option")
    import torch

    monkeypatch.setattr(
        torch.fx.GraphModule, "set_output_tensors_as_unowned", lambda module, enabled: None, raising=False
    )
    if release_row.dryrun == "cpu_block_inputs":
        import torch_tensorrt.dynamo._compiler as compiler

        original = compiler.get_torch_inputs

        def get_torch_inputs_on_cpu(inputs, device, *args, **kwargs):
            return original(inputs, "cpu", *args, **kwargs)

        monkeypatch.setattr(compiler, "get_torch_inputs", get_torch_inputs_on_cpu)
    yield


@pytest.fixture
def constants_on_cpu(monkeypatch):
    """Lowering and the export path on a machine without a GPU: 2.2-2.4's constant folding calls `.cuda()` on
    folded constants, and their `dynamo.compile` moves the sample inputs to `settings.device`; here both stay on
    the CPU (HARNESS-NOTES). Test-process only, and the same with and without trt_compat; yields the monkeypatch."""
    import torch
    import torch_tensorrt.dynamo._compiler as compiler

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    if hasattr(compiler, "to_torch_device"):
        monkeypatch.setattr(compiler, "to_torch_device", lambda *args, **kwargs: torch.device("cpu"))
    yield monkeypatch


@pytest.fixture
def devices_on_cpu(constants_on_cpu, dryrun_on_cpu):
    """constants_on_cpu and dryrun_on_cpu together: a dryrun compile through the export path."""
    yield constants_on_cpu


@pytest.fixture
def engines(monkeypatch, release_row):
    """The export path's accelerated blocks behave as TensorRT engines would with state (a labelled test stand-in:
    tests/helpers/engine_standin.py); yields the KV writes made in place, per compile."""
    from tests.helpers.export_path import engines_standin

    yield engines_standin(monkeypatch, release_row)

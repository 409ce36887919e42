"""keep_module_state_at_compile on the real Torch-TensorRT ``torch.compile`` backend, with and without trt_compat.

A training-mode ``BatchNorm1d`` compiled in dryrun (``trt_compat.probing.Probe``). Where Dynamo keeps the module as a
``call_module`` node (torch 2.2-2.4; torch 2.5 with ``inline_inbuilt_nn_modules=False``), upstream's AOT trace runs
it on its real buffers, counting a batch at compile time, and then fails on the running-mean update; newer torch
inlines the module, so its buffers are graph inputs (keep_input_mutations' defect) and the reproducer does not
apply. ``COUNTED_AT_COMPILE`` says, per release, what the reproducer finds without trt_compat: a change in a new
wheel fails a test here.
"""

from __future__ import annotations

import logging
import os

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from trt_compat.patches import keep_module_state_at_compile as kmsc  # noqa: E402

from trt_compat.patching import NotApplicable  # noqa: E402

# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 2, 0), None)

# TRT_COMPAT_RECORD_ROWS=1: a release without a row is measured and the row to add is the skip reason (pytest -rs).
RECORDING = os.environ.get("TRT_COMPAT_RECORD_ROWS") == "1"
RECORD = object()

# True: one batch counted at compile time; None: this torch's Dynamo inlines BatchNorm (the reproducer does not apply).
COUNTED_AT_COMPILE = {
    "2.3.0": True,
    "2.4.0": True,
    "2.5.0": True,
    "2.6.0": True,
    "2.6.1": True,
    "2.7.0": True,
    "2.8.0": True,
    "2.9.0": True,
    "2.10.0": True,
    "2.11.0": True,
    "2.12.0": None,
    "2.12.1": None,
    "2.13.0": None,
    "2.14.0": None,
}


@pytest.fixture
def counted(request, release_row):
    if release_row.line == "2.2.0":
        pytest.skip("2.2.0 has no dryrun")
    if release_row.line not in COUNTED_AT_COMPILE and RECORDING and "without_trt_compat" in request.node.name:
        return RECORD
    if release_row.line not in COUNTED_AT_COMPILE:
        pytest.fail(
            f"add a row for {release_row.line} to COUNTED_AT_COMPILE in "
            "tests/integration/test_keep_module_state_at_compile.py: run check_batch_counted_at_compile without "
            "trt_compat (TRT_COMPAT_RECORD_ROWS=1 and pytest -rs show it) and record what it finds"
        )
    return COUNTED_AT_COMPILE[release_row.line]


def test_a_batch_is_counted_at_compile_time_without_trt_compat(upstream, counted, fresh_dynamo, release_row):
    from trt_compat.probing import Probe

    if counted is RECORD:
        try:
            found = kmsc.check_batch_counted_at_compile(Probe()) is not None
        except NotApplicable:
            found = None
        pytest.skip(f"ROW {release_row.line} COUNTED_AT_COMPILE: {found!r}")

    if counted is None:
        with pytest.raises(NotApplicable):
            kmsc.check_batch_counted_at_compile(Probe())
        return
    assert kmsc.check_batch_counted_at_compile(Probe()) == "num_batches_tracked is 1 after 0 call(s) (eager: 0)"


def test_no_batch_is_counted_at_compile_time_with_trt_compat(shim, counted, fresh_dynamo):
    from trt_compat.probing import Probe

    if counted is None:
        pytest.skip("NotApplicable here, as shown without trt_compat")
    assert kmsc.check_batch_counted_at_compile(Probe()) is None


def test_running_statistics_equal_eager_call_after_call_with_trt_compat(shim, counted, fresh_dynamo):
    """Without pass_through_build_failures the backend runs the graph in PyTorch where its trace fails: with
    trt_compat each compile counts nothing, each call one batch, as eager (upstream: two after the first call)."""
    if counted is None:
        pytest.skip("the module is inlined here: its buffers are keep_input_mutations' business")
    logging.getLogger("torch_tensorrt").setLevel(logging.CRITICAL)
    torch.manual_seed(0)
    model, eager = kmsc.BatchNormTraining().train(), kmsc.BatchNormTraining().train()
    x = torch.randn(8, 3)
    with kmsc._dynamo_keeps_modules():
        compiled = torch.compile(model, backend="torch_tensorrt", options={"dryrun": True, "min_block_size": 1})
        with torch.no_grad():
            for call in range(3):
                torch.testing.assert_close(compiled(x + call), eager(x + call), rtol=0, atol=0)
                for name, buffer in eager.named_buffers():
                    assert torch.equal(dict(model.named_buffers())[name], buffer), (name, call)

"""keep_export_input_updates on the real Torch-TensorRT wheel: the caller's input updated in place, through
``torch_tensorrt.dynamo.compile`` in dryrun with the engine stand-in, three calls in memory and three in a serving
process without trt_compat after ``torch_tensorrt.save``, compared with eager bit for bit.

2.4.0 and 2.5.0 keep the update (their copy_ runs in a PyTorch block); from 2.7.0 remove_num_users_is_0_nodes erases
it, in memory and in the saved program (2.12.1, 2.14.0). With trt_compat it is kept, after every reader of the old
value. TensorRT engines cannot be compared here (no GPU).
"""

from __future__ import annotations

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from trt_compat.patches import keep_export_input_updates  # noqa: E402

from tests.helpers.export_path import KEPT, LOST, as_stated, assert_as_stated, measure, row  # noqa: E402
from tests.helpers.stateful import CASES, Case  # noqa: E402
from trt_compat.probing import Probe  # noqa: E402

# What unpatched upstream does with the caller's update: (in memory, served).
UPSTREAM = {
    "2.3.0": (KEPT, KEPT),
    "2.4.0": (KEPT, KEPT),
    "2.5.0": (KEPT, KEPT),
    "2.6.0": (KEPT, KEPT),
    "2.6.1": (KEPT, KEPT),
    "2.7.0": (LOST, LOST),
    "2.8.0": (LOST, LOST),
    "2.9.0": (LOST, LOST),
    "2.10.0": (LOST, LOST),
    "2.11.0": (LOST, LOST),
    "2.12.0": (LOST, LOST),
    "2.12.1": (LOST, LOST),
    "2.13.0": (LOST, LOST),
    "2.14.0": (LOST, LOST),
}

# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 7, 0), None)


class ReadThenUpdate(torch.nn.Module):
    """The old value is read in a PyTorch block (torch_executed_ops), then the input is updated."""

    def forward(self, x):
        y = torch.exp(x)
        x.add_(1)
        return y + x


READ_THEN_UPDATE = Case(ReadThenUpdate, lambda call: (torch.arange(6.0).view(2, 3) / (call + 1),))
EXP_IN_TORCH = {"torch_executed_ops": {"torch.ops.aten.exp.default"}}


def test_without_trt_compat(upstream, release_row, engines, constants_on_cpu):
    measured = measure(CASES["input_update"])
    assert_as_stated(measured, *row(UPSTREAM, release_row, __file__, as_stated(measured)))


def test_with_trt_compat(shim, engines, constants_on_cpu):
    measured = measure(CASES["input_update"])
    assert measured.kept, measured


def test_the_update_runs_after_a_pytorch_block_reading_the_old_value(shim, engines, constants_on_cpu):
    measured = measure(READ_THEN_UPDATE, **EXP_IN_TORCH)
    assert measured.kept, measured


def test_reproducer_without_and_with_trt_compat(request, release, engines, constants_on_cpu):
    (defect,) = keep_export_input_updates.PATCH.defects
    request.getfixturevalue("upstream")
    found = defect.check(Probe())
    assert (found is not None) == (release >= STATED_RANGE[0]), found
    request.getfixturevalue("shim")
    assert defect.check(Probe()) is None

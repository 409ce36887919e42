"""What trt_compat costs a compile it has nothing to do on, counted without timing noise.

A torchvision ResNet-18 in evaluation mode (random weights, 64x64) compiled by the real ``torch.compile`` backend in
dryrun needs none of the patches: no pool the converters reject, no in-place update of an input, nothing folded.
Every fake-tensor op the compile dispatches is counted (``FakeTensorMode.dispatch``), without trt_compat and with
every patch this release needs: the patches decide from the graph alone that they have nothing to do, before any
fake or real run, so the counts must agree within 1 %. (Time is measured by the benchmarks, not here.)
"""

from __future__ import annotations

import logging

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402


@pytest.fixture
def fake_dispatches(monkeypatch):
    """A counter of the fake-tensor ops dispatched while it is read."""
    from torch._subclasses import fake_tensor

    counted = [0]
    original = fake_tensor.FakeTensorMode.dispatch

    def counting(self, *args, **kwargs):
        counted[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(fake_tensor.FakeTensorMode, "dispatch", counting)
    return counted


def dispatches_of_a_compile(counted, model, x) -> int:
    torch._dynamo.reset()
    counted[0] = 0
    with torch.no_grad():
        torch.compile(model, backend="torch_tensorrt", options={"dryrun": True, "min_block_size": 1})(x)
    return counted[0]


def test_a_model_that_needs_nothing_costs_no_fake_tensor_op(
    release_row, fake_dispatches, dryrun_on_cpu, constants_on_cpu, fresh_dynamo
):
    import torchvision

    import trt_compat

    if release_row.dryrun == "absent":
        pytest.skip(f"{release_row.line} has no dryrun")
    logging.getLogger("torch_tensorrt").setLevel(logging.WARNING)
    model, x = torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, 64, 64)
    trt_compat.revert()
    dispatches_of_a_compile(fake_dispatches, model, x)  # the first compile of a process pays for lazy imports
    without = dispatches_of_a_compile(fake_dispatches, model, x)
    applied = [p.name for p in trt_compat.apply().patches if p.state == "applied"]
    try:
        with_trt_compat = dispatches_of_a_compile(fake_dispatches, model, x)
    finally:
        trt_compat.revert()
    assert applied, "no patch applies on this release: nothing is measured"
    assert with_trt_compat <= 1.01 * without, (with_trt_compat, without, applied)

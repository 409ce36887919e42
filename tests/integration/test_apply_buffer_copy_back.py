"""apply_buffer_copy_back on the real Torch-TensorRT wheel: buffer updates 2.14.0 files as "copy-back" (a step counter,
a 2-D cache), through ``torch_tensorrt.dynamo.compile`` in dryrun with the engine stand-in, three calls in memory and
three in a serving process without trt_compat, compared with eager bit for bit.

Without trt_compat 2.14.0's compiled module never applies them while the saved and reloaded program does; with it
both keep them. Copy-back values are computed by the engine, so the engine stand-in changes nothing here; 2.14's
engine-aliased KV writes (a 4-D cache written along dim 2) are the engine's (tests/integration/test_export_path.py).
"""

from __future__ import annotations

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from trt_compat.patches import apply_buffer_copy_back  # noqa: E402

from tests.helpers.export_path import KEPT, LOST, as_stated, assert_as_stated, measure, row  # noqa: E402
from tests.helpers.stateful import CASES, Case  # noqa: E402
from trt_compat.probing import Probe  # noqa: E402


class RowCache(torch.nn.Module):
    """A 2-D cache: no IKVCacheUpdateLayer takes it, so 2.14 files the write as copy-back."""

    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.zeros(4, 3))

    def forward(self, x, position):
        self.cache.index_copy_(0, position, x)
        return self.cache.sum(0) * 1


MODELS = {
    "counter": CASES["counter"],
    "row_cache": Case(RowCache, lambda call: (torch.full((1, 3), call + 1.0), torch.tensor([call]))),
}

# What unpatched upstream does per model: (in memory, served); releases before 2.14.0 have no copy-back.
UPSTREAM = {
    "2.14.0": {"counter": (LOST, KEPT), "row_cache": (LOST, KEPT)},
}

# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 14, 0), None)


@pytest.fixture
def in_range(release):
    if release < STATED_RANGE[0]:
        pytest.skip("copy-back is new in 2.14.0")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_without_trt_compat(name, in_range, upstream, release_row, engines, constants_on_cpu):
    measured = measure(MODELS[name])
    assert_as_stated(measured, *row(UPSTREAM, release_row, __file__, {name: as_stated(measured)})[name])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_with_trt_compat(name, in_range, shim, engines, constants_on_cpu):
    measured = measure(MODELS[name])
    assert measured.kept, measured


def test_reproducer_without_and_with_trt_compat(in_range, request, engines, constants_on_cpu):
    (defect,) = apply_buffer_copy_back.PATCH.defects
    request.getfixturevalue("upstream")
    assert defect.check(Probe()) is not None
    request.getfixturevalue("shim")
    assert defect.check(Probe()) is None

"""return_updated_buffers on the real Torch-TensorRT wheel: a model returning the buffer it updates, through
``torch_tensorrt.dynamo.compile`` in dryrun with the engine stand-in, three calls in memory and three in a serving
process without trt_compat, compared with eager bit for bit.

2.14.0's lift_mutated_buffers cannot compile it (#4694); earlier releases compile it (their losses are
keep_exported_buffer_updates'). With trt_compat 2.14.0 compiles it and keeps the counter, in memory and served.
"""

from __future__ import annotations

import re

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from trt_compat.patches import return_updated_buffers  # noqa: E402

from tests.helpers.export_path import measure, row  # noqa: E402
from tests.helpers.stateful import CASES  # noqa: E402
from trt_compat.probing import Probe  # noqa: E402

ERASE_FAILS = r"Tried to erase Node copy__default but it still had 1 users in the graph"

# What unpatched upstream's compile does with the model: a regex of its error, or None (it compiles).
UPSTREAM = {
    "2.3.0": None,
    "2.4.0": None,
    "2.5.0": None,
    "2.6.0": None,
    "2.6.1": None,
    "2.7.0": None,
    "2.8.0": None,
    "2.9.0": None,
    "2.10.0": None,
    "2.11.0": None,
    "2.12.0": None,
    "2.12.1": None,
    "2.13.0": None,
    "2.14.0": ERASE_FAILS,
}

# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 14, 0), None)


def test_without_trt_compat(upstream, release_row, engines, constants_on_cpu):
    if release_row.line not in UPSTREAM:
        try:
            measure(CASES["counter_returned"])
            found = None
        except RuntimeError as exc:
            found = str(exc).splitlines()[0]
        row(UPSTREAM, release_row, __file__, found)
    error = row(UPSTREAM, release_row, __file__)
    if error is None:
        measure(CASES["counter_returned"])
        return
    with pytest.raises(RuntimeError) as failed:
        measure(CASES["counter_returned"])
    assert re.search(error, str(failed.value)), failed.value


def test_with_trt_compat(shim, engines, constants_on_cpu):
    measured = measure(CASES["counter_returned"])
    assert measured.kept, measured


def test_reproducer_without_and_with_trt_compat(request, release, engines, constants_on_cpu):
    (defect,) = return_updated_buffers.PATCH.defects
    if release < STATED_RANGE[0]:
        pytest.skip("lift_mutated_buffers is new in 2.14.0 (the reproducer says not applicable)")
    request.getfixturevalue("upstream")
    assert re.search(ERASE_FAILS, defect.check(Probe()) or "")
    request.getfixturevalue("shim")
    assert defect.check(Probe()) is None

"""keep_exported_buffer_updates on the real Torch-TensorRT wheel: buffers an exported program updates, through
``torch_tensorrt.dynamo.compile`` in dryrun with the engine stand-in (tests/helpers/engine_standin.py), three calls in
memory and three in a serving process without trt_compat after ``torch_tensorrt.save``, compared with eager bit for bit.

Without trt_compat 2.4.0, 2.5.0 and 2.12.1 freeze the step counter (constant_fold) and lose the returned counter;
2.4.0 and 2.5.0 keep the KV writes in memory but cannot save the slice-assigned cache (a folded read of it shares its
storage); 2.12.1 also erases the KV writes (remove_num_users_is_0_nodes). With trt_compat every update is kept in
memory and in the serving process. TensorRT engines cannot be compared here (no GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from trt_compat.patches import keep_exported_buffer_updates  # noqa: E402

from tests.helpers.export_path import (  # noqa: E402
    DRYRUN_UNLOADABLE,
    KEPT,
    LOST,
    as_stated,
    assert_as_stated,
    assert_kept,
    measure,
    row,
)  # noqa: E402
from tests.helpers.stateful import CASES  # noqa: E402
from trt_compat.probing import Probe  # noqa: E402

MODELS = ("counter", "counter_returned", "kv_slice", "kv_index_copy")
# torch.export's functional trace of the cache read that 2.4-2.5's constant_fold turned into a parameter sharing
# the buffer's storage, when torch_tensorrt.save retraces the module.
ALIASED_MUTATED = r"Encountered aliased inputs that are mutated"


@dataclass(frozen=True)
class Upstream:
    """What unpatched upstream does per model: (in memory, served), each KEPT, LOST or a regex of the error."""

    models: Dict[str, Tuple[str, str]]


FOLDS_THE_COUNTER = {"counter": (LOST, LOST), "counter_returned": (LOST, LOST)}
UPSTREAM = {
    # constant_fold folds count + 1 and erases copy_ and buffer; index_put stays in PyTorch and writes the cache.
    "2.3.0": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (KEPT, ALIASED_MUTATED), "kv_index_copy": (KEPT, KEPT)}),
    "2.4.0": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (KEPT, ALIASED_MUTATED), "kv_index_copy": (KEPT, KEPT)}),
    "2.5.0": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (KEPT, ALIASED_MUTATED), "kv_index_copy": (KEPT, KEPT)}),
    # remove_num_users_is_0_nodes erases both caches' copy_.
    "2.6.0": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (KEPT, KEPT), "kv_index_copy": (KEPT, KEPT)}),
    "2.6.1": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (KEPT, KEPT), "kv_index_copy": (KEPT, KEPT)}),
    "2.7.0": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (LOST, LOST), "kv_index_copy": (LOST, LOST)}),
    "2.8.0": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (LOST, LOST), "kv_index_copy": (LOST, LOST)}),
    # The saved kv_slice program cannot be loaded on 2.9.0, with or without trt_compat (DRYRUN_UNLOADABLE).
    "2.9.0": Upstream(
        {
            **FOLDS_THE_COUNTER,
            "kv_slice": (LOST, DRYRUN_UNLOADABLE[("2.9.0", "kv_slice")]),
            "kv_index_copy": (LOST, LOST),
        }
    ),
    "2.10.0": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (LOST, LOST), "kv_index_copy": (LOST, LOST)}),
    "2.11.0": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (LOST, LOST), "kv_index_copy": (LOST, LOST)}),
    "2.12.0": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (LOST, LOST), "kv_index_copy": (LOST, LOST)}),
    "2.12.1": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (LOST, LOST), "kv_index_copy": (LOST, LOST)}),
    "2.13.0": Upstream({**FOLDS_THE_COUNTER, "kv_slice": (LOST, LOST), "kv_index_copy": (LOST, LOST)}),
}

# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 3, 0), (2, 14, 0))


@pytest.fixture
def in_range(release):
    if release < STATED_RANGE[0]:
        pytest.skip("2.2.0 has no dryrun and no post_lowering: not covered")
    if release >= STATED_RANGE[1]:
        pytest.skip("2.14.0 and newer lift updated buffers themselves (tests/integration/test_export_path.py)")


@pytest.mark.parametrize("name", MODELS)
def test_without_trt_compat(name, in_range, upstream, release_row, engines, constants_on_cpu):
    measured = measure(CASES[name])
    assert_as_stated(measured, *row(UPSTREAM, release_row, __file__, {name: as_stated(measured)}).models[name])


@pytest.mark.parametrize("name", MODELS)
def test_with_trt_compat(name, in_range, shim, engines, constants_on_cpu, release_row):
    assert_kept(measure(CASES[name]), release_row.line, name)


def test_the_buffer_is_an_engine_input_and_written_at_the_top_level(in_range, shim, engines, constants_on_cpu):
    import torch

    compiled = Probe().compile_exported(CASES["counter"].model().eval(), *CASES["counter"].arguments(0))
    graph = compiled.module.graph
    writes = [node for node in graph.nodes if node.target is torch.ops.aten.copy_.default]
    assert [(w.args[0].op, w.args[0].target) for w in writes] == [("get_attr", "count")]
    blocks = [node for node in graph.nodes if node.op == "call_module" and "_run_on_acc" in node.target]
    assert any(writes[0].args[0] in block.args for block in blocks), graph


def test_reproducer_without_and_with_trt_compat(in_range, request, engines, constants_on_cpu):
    (defect,) = keep_exported_buffer_updates.PATCH.defects
    request.getfixturevalue("upstream")
    assert defect.check(Probe()) is not None
    request.getfixturevalue("shim")
    assert defect.check(Probe()) is None

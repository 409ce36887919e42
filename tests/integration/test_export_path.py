"""The deployment path (project issue #21) on the real Torch-TensorRT wheel: ``torch.export.export`` ->
``torch_tensorrt.dynamo.compile`` -> ``torch_tensorrt.save`` -> ``torch_tensorrt.load`` in a serving process that never
imports trt_compat, for the five stateful models of tests/helpers/stateful.py, three calls each, compared with eager
bit for bit (outputs, the caller's tensors, the module's buffers).

In dryrun, with the engine stand-in (tests/helpers/engine_standin.py: engines bake the tensors they read, and 2.14
writes eligible KV updates in place through aliased bindings). What upstream does without trt_compat is stated per
patch: test_keep_exported_buffer_updates.py, test_keep_export_input_updates.py, test_return_updated_buffers.py,
test_apply_buffer_copy_back.py. TensorRT engines themselves cannot be run here (no GPU).
"""

from __future__ import annotations

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch_tensorrt.dynamo._compiler as compiler  # noqa: E402

from tests.helpers.export_path import assert_kept, measure  # noqa: E402
from tests.helpers.stateful import CASES  # noqa: E402


@pytest.mark.parametrize("name", sorted(CASES))
def test_with_trt_compat_every_update_is_kept_in_memory_and_served(name, shim, engines, constants_on_cpu, release_row):
    assert_kept(measure(CASES[name]), release_row.line, name)


@pytest.fixture
def predicted(monkeypatch):
    """What 2.14's lift_mutated_buffers predicts the engines alias (buffer bindings), per compile."""
    found = []
    original = getattr(compiler, "lift_mutated_buffers", None)
    if original is None:
        return found

    def recording(*args, **kwargs):
        gm, lifted = original(*args, **kwargs)
        found.append(list(gm.meta.get("_predicted_kv_bindings", [])))
        return gm, lifted

    monkeypatch.setattr(compiler, "lift_mutated_buffers", recording)
    return found


@pytest.mark.parametrize("name", ["kv_slice", "kv_index_copy", "counter"])
def test_the_engine_standin_writes_in_place_exactly_what_upstream_predicts(
    name, upstream, release, predicted, engines, constants_on_cpu
):
    """2.14's classifier and converter decide alike which writes an engine aliases; before 2.14 none is."""
    measured = measure(CASES[name])
    in_place = [len(writes) for writes in engines]
    if release < (2, 14, 0):
        assert predicted == [] and set(in_place) == {0}
        return
    assert in_place[0] == len(predicted[0]) == (0 if name == "counter" else 1), (predicted, engines)
    if name != "counter":  # the engine keeps the cache up to date itself: nothing for trt_compat to fix
        assert measured.kept, measured


@pytest.mark.parametrize("name", ["kv_slice", "kv_index_copy"])
def test_plain_dryrun_misses_what_an_engine_writes_in_place(name, upstream, release, constants_on_cpu):
    """Without the stand-in, a dryrun block computes 2.14's aliased KV write and drops it: the harness alone would
    report a loss the runtime does not have."""
    if release < (2, 14, 0):
        pytest.skip("no aliased engine I/O before 2.14.0")
    measured = measure(CASES[name])
    assert any("buffer cache" in found for found in measured.in_memory), measured

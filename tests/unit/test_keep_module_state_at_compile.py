"""Tests for trt_compat.patches.keep_module_state_at_compile: CPU only, no torch_tensorrt needed.

The stand-in for upstream's trace, ``trace_on_real_modules``, does what ``aot_export_joint_simple`` does to a
``call_module`` node inside the backend's fake mode: it runs the module's ``forward`` on its real buffers (measured
on 2.4.0: ``num_batches_tracked`` counts one batch per compile), then fails, as upstream's trace does on the
running-mean update.
"""

import pytest
import torch
from torch import nn
from trt_compat.patches.keep_module_state_at_compile import (
    BatchNormTraining,
    module_state_at_risk,
    trace_keeping_module_state,
)


def trace_on_real_modules(gm, sample_inputs):
    with torch.no_grad():
        gm(*sample_inputs)
    raise RuntimeError("mutating a non-functional tensor with a functional tensor is not allowed")


def test_the_stand_in_counts_a_batch_at_compile_time():
    model = BatchNormTraining().train()
    with pytest.raises(RuntimeError):
        trace_on_real_modules(torch.fx.symbolic_trace(model), [torch.randn(8, 3)])
    assert model.bn.num_batches_tracked.item() == 1


def test_the_buffers_are_as_before_whatever_the_compile_did():
    model = BatchNormTraining().train()
    gm = torch.fx.symbolic_trace(model)
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    versions = {name: buffer._version for name, buffer in model.named_buffers()}
    with pytest.raises(RuntimeError, match="non-functional"):
        trace_keeping_module_state(trace_on_real_modules, gm, [torch.randn(8, 3)])
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name
    # The trace's own write is counted (it happened); putting the contents back is not one more.
    assert model.bn.num_batches_tracked._version == versions["bn.num_batches_tracked"] + 1


def test_a_successful_compile_returns_the_backends_result_with_the_state_restored():
    model = BatchNormTraining().train()
    gm = torch.fx.symbolic_trace(model)

    def compiles(graph, sample_inputs, settings):
        assert settings == "settings"
        graph(*sample_inputs)
        return "compiled"

    assert trace_keeping_module_state(compiles, gm, [torch.randn(8, 3)], "settings") == "compiled"
    assert model.bn.num_batches_tracked.item() == 0 and torch.equal(model.bn.running_mean, torch.zeros(3))


def test_modules_in_eval_mode_and_graphs_without_modules_put_nothing_at_risk():
    assert module_state_at_risk(torch.fx.symbolic_trace(BatchNormTraining().eval())) == []
    inlined = torch.fx.GraphModule(nn.Module(), torch.fx.Graph())
    assert module_state_at_risk(inlined) == []


def test_each_buffer_is_saved_once_even_when_its_module_runs_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x):
            return self.bn(self.bn(x))

    model = Twice().train()
    assert len(module_state_at_risk(torch.fx.symbolic_trace(model))) == 3  # running mean, variance, count


def test_the_contents_are_put_back_inside_the_fake_mode_the_backend_traces_in():
    """Upstream traces inside its fake mode with allow_non_fake_inputs=True, where an op on real operands alone (the
    batch counter's add_) still runs for real; the saved copies must be real tensors there too."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = BatchNormTraining().train()
    gm = torch.fx.symbolic_trace(model)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        x = mode.from_tensor(torch.randn(8, 3))

        def counts_for_real(graph, sample_inputs):
            model.bn.num_batches_tracked.add_(1)
            return "traced"

        assert trace_keeping_module_state(counts_for_real, gm, [x]) == "traced"
    assert model.bn.num_batches_tracked.item() == 0

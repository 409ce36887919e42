"""keep_input_items on the real Torch-TensorRT ``torch.compile`` backend, with and without trt_compat.

From 2.12.0 the backend's ``fold_get_attr_item_calls`` folds ``.item()`` of graph inputs into the first call's value.
Compiled with ``capture_scalar_outputs`` (otherwise ``.item()`` breaks the graph and never reaches the backend) in
dryrun through ``trt_compat.probing.Probe`` (``pass_through_build_failures``: a failure is never hidden by an eager
fallback), each model is called twice with different inputs and compared with eager bit for bit. Dryrun runs the
partitioned graph in PyTorch: this says that the graph computes the model, nothing about TensorRT's numerics.
"""

from __future__ import annotations

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from trt_compat.patches import keep_input_items  # noqa: E402

from trt_compat.probing import NotApplicable, Probe  # noqa: E402

STATED_RANGE = ((2, 12, 0), None)

# What upstream does with x * s.item() called again with another s: "n/a" (no fold_get_attr_item_calls), "stale"
# (the second call computes with the first call's s). Measured on 2.12.1, 2.13.0 and 2.14.0; 2.12.0 has the same
# pass (keep_identity_ops measures it there).
UPSTREAM = {
    **{
        line: "n/a"
        for line in (
            "2.2.0",
            "2.3.0",
            "2.4.0",
            "2.5.0",
            "2.6.0",
            "2.6.1",
            "2.7.0",
            "2.8.0",
            "2.9.0",
            "2.10.0",
            "2.11.0",
        )
    },
    **{line: "stale" for line in ("2.12.0", "2.12.1", "2.13.0", "2.14.0")},
}


@pytest.fixture
def expected(release_row):
    if release_row.line not in UPSTREAM:
        pytest.fail(
            f"add a row for torch-tensorrt {release_row.line} to UPSTREAM: run x * s.item() twice without "
            "trt_compat on that release"
        )
    return UPSTREAM[release_row.line]


@pytest.fixture
def probe(fresh_dynamo):
    probe = Probe()
    if not probe.has_dryrun:
        pytest.skip("no dryrun option on this release")
    return probe


class ScaledByParameters(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(3.0))
        self.register_buffer("offset", torch.tensor(0.5))

    def forward(self, x, s):
        return x * s.item() + self.weight.item() - self.offset.item()


def test_the_input_item_is_folded_without_trt_compat(upstream, probe, expected):
    if expected == "n/a":
        with pytest.raises(NotApplicable):
            keep_input_items.check_input_item_folded(probe)
        return
    found = keep_input_items.check_input_item_folded(probe)
    assert found is not None and "the first call's s was folded in" in found, found


def test_the_input_item_is_computed_at_every_call_with_trt_compat(shim, probe, expected):
    state = {p.name: p.state for p in shim.patches}["keep_input_items"]
    if expected == "n/a":
        assert state == "not_needed"
        with pytest.raises(NotApplicable):
            keep_input_items.check_input_item_folded(probe)
        return
    assert state == "applied"
    assert keep_input_items.check_input_item_folded(probe) is None


def all_ops(module):
    return [
        str(node.target)
        for sub in module.modules()
        if hasattr(sub, "graph")
        for node in sub.graph.nodes
        if node.op == "call_function"
    ]


def test_parameters_and_buffers_are_still_folded(shim, probe, expected):
    if expected == "n/a":
        pytest.skip("no fold_get_attr_item_calls on this release")
    model, x = ScaledByParameters().eval(), torch.ones(2, 3)
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        compiled = probe.compile(model, x, torch.tensor(2.0))
        later = compiled(x, torch.tensor(5.0))
    assert probe.same(compiled.output, model(x, torch.tensor(2.0))) is None
    assert probe.same(later, model(x, torch.tensor(5.0))) is None
    # One data-dependent scalar left in the graph: the input's; the parameter's and the buffer's became numbers.
    scalars = [op for op in all_ops(compiled.partitioned) if "_local_scalar_dense" in op]
    assert scalars == ["aten._local_scalar_dense.default"], scalars

"""The probe's export path on the real wheel: ``Probe.compile_exported`` compiles through ``torch.export`` and
``torch_tensorrt.dynamo.compile`` in dryrun, and ``Probe.serve`` runs what ``torch_tensorrt.save`` wrote in a fresh
interpreter that never imports trt_compat. A model without state must give eager's numbers bit for bit on both."""

from __future__ import annotations

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402

from tests.helpers.stateful import differences  # noqa: E402
from trt_compat.probing import Probe, ServingError  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.linear(x)) * 2


@pytest.fixture
def probe(release_row):
    if release_row.dryrun == "absent":
        pytest.skip(f"torch-tensorrt {release_row.line} has no dryrun")
    return Probe()


def test_compile_exported_matches_eager_and_calls_again(upstream, probe):
    torch.manual_seed(0)
    model = Block().eval()
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad():
        expected_x, expected_y = model(x), model(y)
    compiled = probe.compile_exported(model, x)
    assert compiled.blocks, "no accelerated block: the export path did not partition"
    assert differences(compiled.output, expected_x, "first call") == []
    assert differences(compiled(y), expected_y, "second call") == []


def test_serve_runs_the_saved_program_without_trt_compat(upstream, probe):
    """The serving process exits with an error if anything imported trt_compat there."""
    torch.manual_seed(0)
    model = Block().eval()
    calls = [(torch.randn(2, 4),) for _ in range(2)]
    with torch.no_grad():
        expected = [model(*call) for call in calls]
    compiled = probe.compile_exported(model, *calls[0], save=True)
    assert compiled.saved is not None, compiled.save_error
    served = probe.serve(compiled, calls)
    for index, (actual, want) in enumerate(zip(served.outputs, expected)):
        assert differences(actual, want, f"call {index}") == []


def test_serve_says_why_when_nothing_was_saved(upstream, probe):
    compiled = probe.compile_exported(Block().eval(), torch.randn(2, 4))
    with pytest.raises(ServingError, match="not saved"):
        probe.serve(compiled, [(torch.randn(2, 4),)])

"""A SegNet-style encoder-decoder in one TensorRT block: pooling indices and unpooling, on the real compiler.

No Torch-TensorRT release converts ``max_poolNd_with_indices`` (nor the ``getitem`` of its tuple) or
``max_unpoolNd``, so upstream cuts such a model into several accelerated blocks with PyTorch in
between. With trt_compat (``pool_indices="tensorrt"``, the default) every node has a converter and
the whole model is one accelerated block (on 2.2 and 2.3, which convert no ``scatter``, each unpool's
scatter stays in PyTorch); with ``pool_indices="torch"`` the indices and the unpooling run in PyTorch
again.

What is counted is what the real compiler sees: the unsupported operators are those the real
``TorchTensorRTOperatorSupport`` (the converter registry with its capability validators) rejects in
the graph handed to ``partitioning.get_graph_converter_support``, and the blocks are the
``_run_on_acc`` children of the module ``compile_module`` returns, from
``torch.compile(..., backend="torch_tensorrt", options={"dryrun": True, "min_block_size": 1})``.
"""

from __future__ import annotations

from typing import Dict, List

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch_tensorrt.dynamo import partitioning  # noqa: E402
from torch_tensorrt.dynamo.backend import backends  # noqa: E402
from torch_tensorrt.dynamo.partitioning._global_partitioner import TorchTensorRTOperatorSupport  # noqa: E402

# Measured without trt_compat on 2.4.0, 2.5.0 and 2.14.0 (the same on each): per pool/unpool pair,
# the tuple op, its two getitems and the unpool are unsupported, and PyTorch splits the graph at each.
UPSTREAM_UNSUPPORTED = {
    "torch.ops.aten.max_pool2d_with_indices.default": 3,
    "_operator.getitem": 6,
    "torch.ops.aten.max_unpool2d.default": 3,
}
UPSTREAM_BLOCKS = 6
# pool_indices="torch": the trt_compat:: indices ops and the unpools stay in PyTorch; the values
# (max_pool2d) join the convolutions, so fewer blocks than upstream but still several.
TORCH_MODE_UNSUPPORTED = {
    "torch.ops.trt_compat.max_pool_indices.default": 3,
    "torch.ops.aten.max_unpool2d.default": 3,
}
TORCH_MODE_BLOCKS = 4
# 2.2 and 2.3 have no converter for aten.scatter, which trt_compat's max_unpool decomposition ends
# in: there the indices still join TensorRT, and each unpool's scatter stays in PyTorch.
NO_SCATTER_UNSUPPORTED = {"torch.ops.aten.scatter.src": 3}
NO_SCATTER_BLOCKS = 4


def scatter_converts() -> bool:
    from torch_tensorrt.dynamo.conversion._ConverterRegistry import DYNAMO_CONVERTERS

    return torch.ops.aten.scatter.src in DYNAMO_CONVERTERS


class SegNet(nn.Module):
    """Three conv+relu+pool encoder stages, three unpool+conv decoder stages using the pools' indices."""

    def __init__(self, channels=(3, 8, 16, 16), classes=4):
        super().__init__()
        pairs = list(zip(channels, channels[1:]))
        self.encoders = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in pairs)
        self.decoders = nn.ModuleList(
            nn.Conv2d(b, a if depth else classes, 3, padding=1) for depth, (a, b) in enumerate(pairs)
        )
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)

    def forward(self, x):
        indices = []
        for conv in self.encoders:
            x, index = self.pool(torch.relu(conv(x)))
            indices.append(index)
        for depth in reversed(range(len(self.decoders))):
            x = self.decoders[depth](self.unpool(x, indices[depth]))
            if depth:
                x = torch.relu(x)
        return x


def segnet_and_input():
    torch.manual_seed(0)
    return SegNet().eval(), torch.randn(1, 3, 32, 32)


@pytest.fixture
def observed(monkeypatch):
    """Record, per compile, the operators the real converter support rejects before partitioning."""
    unsupported: List[Dict[str, int]] = []
    original = partitioning.get_graph_converter_support

    def spy(graph_module, *args, **kwargs):
        support = TorchTensorRTOperatorSupport()
        modules = dict(graph_module.named_modules())
        for node in graph_module.graph.nodes:
            if node.op == "call_function":
                support.is_node_supported(modules, node)
        unsupported.append(dict(support.unsupported_operators))
        return original(graph_module, *args, **kwargs)

    monkeypatch.setattr(partitioning, "get_graph_converter_support", spy)
    return unsupported


def dryrun_compile(model, x, monkeypatch):
    """(output, accelerated block count) of a dryrun torch.compile that must not fall back to eager."""
    produced = []
    original = backends.compile_module

    def spy(*args, **kwargs):
        produced.append(original(*args, **kwargs))
        return produced[-1]

    monkeypatch.setattr(backends, "compile_module", spy)
    compiled = torch.compile(
        model,
        backend="torch_tensorrt",
        options={"dryrun": True, "min_block_size": 1, "pass_through_build_failures": True},
    )
    with torch.no_grad():
        out = compiled(x)
    assert len(produced) == 1, "torch_tensorrt's compile_module did not run exactly once"
    blocks = [name for name, _ in produced[0].named_children() if "_run_on_acc" in name]
    return out, len(blocks)


def check_blocks(compiled, expected_blocks, model, x):
    out, blocks = compiled
    assert blocks == expected_blocks
    with torch.no_grad():
        assert torch.equal(out, model(x))


def test_segnet_without_trt_compat(upstream, observed, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    model, x = segnet_and_input()
    compiled = dryrun_compile(model, x, monkeypatch)
    assert observed == [UPSTREAM_UNSUPPORTED]
    check_blocks(compiled, UPSTREAM_BLOCKS, model, x)


def test_segnet_with_trt_compat_is_one_block(shim, observed, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    import trt_compat

    assert trt_compat.get_pool_indices() == "tensorrt"
    model, x = segnet_and_input()
    compiled = dryrun_compile(model, x, monkeypatch)
    if scatter_converts():
        assert observed == [{}]
        check_blocks(compiled, 1, model, x)
    else:
        assert observed == [NO_SCATTER_UNSUPPORTED]
        check_blocks(compiled, NO_SCATTER_BLOCKS, model, x)


def test_segnet_with_indices_kept_in_torch(shim, observed, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    import trt_compat

    trt_compat.set_pool_indices("torch")
    try:
        model, x = segnet_and_input()
        compiled = dryrun_compile(model, x, monkeypatch)
    finally:
        trt_compat.set_pool_indices(None)
    assert observed == [TORCH_MODE_UNSUPPORTED]
    check_blocks(compiled, TORCH_MODE_BLOCKS, model, x)


def test_segnet_switch_from_the_environment(shim, observed, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    monkeypatch.setenv("TRT_COMPAT_POOL_INDICES", "torch")
    model, x = segnet_and_input()
    compiled = dryrun_compile(model, x, monkeypatch)
    assert observed == [TORCH_MODE_UNSUPPORTED]
    check_blocks(compiled, TORCH_MODE_BLOCKS, model, x)


POOLS_IN_TORCH = {"torch.ops.aten.max_pool2d_with_indices.default", "torch.ops.aten.max_unpool2d.default"}


@pytest.mark.parametrize("side", ["without", "with"])
def test_ops_the_user_keeps_in_pytorch_stay_there(side, request, fresh_dynamo, dryrun_on_cpu):
    """torch_executed_ops names the pooling ops: upstream runs them in PyTorch, and so must trt_compat (it once
    decomposed them into the TensorRT block regardless), through the torch.compile backend on every release."""
    from trt_compat.probing import Probe

    request.getfixturevalue("shim" if side == "with" else "upstream")
    model, x = segnet_and_input()
    compiled = Probe().compile(model, x, torch_executed_ops=POOLS_IN_TORCH)
    in_torch = [op for op in compiled.torch_ops if op.startswith(("aten.max_pool2d", "aten.max_unpool2d"))]
    assert sorted(in_torch) == ["aten.max_pool2d_with_indices.default"] * 3 + ["aten.max_unpool2d.default"] * 3
    assert len(compiled.blocks) == UPSTREAM_BLOCKS  # as many engines as upstream makes of it
    with torch.no_grad():
        assert torch.equal(compiled.output, model(x))


def test_ops_kept_in_pytorch_on_the_export_path(shim, release_row, devices_on_cpu):
    """The same through torch_tensorrt.dynamo.compile, where 2.2-2.5 hand lowering passes no settings."""
    import torch_tensorrt

    if release_row.dryrun == "absent" or release_row.version_tuple >= (2, 6, 0):
        pytest.skip("settings reach the passes directly from 2.6 (covered above); 2.2 has no dryrun")
    model, x = segnet_and_input()
    program = torch.export.export(model, (x,))
    produced = []
    original = partitioning.fast_partition

    def record(gm, *args, **kwargs):
        produced.append(gm)
        return original(gm, *args, **kwargs)

    devices_on_cpu.setattr(partitioning, "fast_partition", record)
    torch_tensorrt.dynamo.compile(program, [x], dryrun=True, min_block_size=1, torch_executed_ops=POOLS_IN_TORCH)
    targets = [str(n.target) for n in produced[0].graph.nodes if n.op == "call_function"]
    assert targets.count("aten.max_pool2d_with_indices.default") == 3, targets

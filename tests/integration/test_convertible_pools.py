"""Ceil-mode and dilated pools on the real compiler: torchvision models in one TensorRT block, never more blocks.

Every release's pool validators reject ``ceil_mode=True`` (max and avg) and a dilation that is not the int 1,
so torchvision's GoogLeNet runs as 11 TensorRT blocks with its 13 max pools in PyTorch, SqueezeNet as 4.
``convertible_pools`` rewrites those pools into ops the release converts: each model below is compiled with
``torch.compile(..., backend="torch_tensorrt", options={"dryrun": True, "min_block_size": 1})`` without and
with trt_compat, and the accelerated blocks (the ``_run_on_acc`` children of what ``compile_module`` returns),
the operators the real converter support rejects, and the output (``torch.equal`` with eager) are checked
against the table below. Random weights; nothing is downloaded.

The table is measured on this harness (CPU, no TensorRT engines: in dryrun the blocks stay GraphModules and
run in PyTorch, so "bit-exact" is about the rewritten graph, not about TensorRT's kernels).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

torchvision = pytest.importorskip(
    "torchvision",
    reason="torchvision is not installed in this venv (it must match the release's torch: 2.3.1 -> "
    "0.18.1, 2.4.1 -> 0.19.1, 2.5.1 -> 0.20.1, 2.14.1 -> 0.29.1; install with --no-deps)",
)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch_tensorrt.dynamo import partitioning  # noqa: E402
from torch_tensorrt.dynamo.backend import backends  # noqa: E402
from torch_tensorrt.dynamo.conversion._ConverterRegistry import DYNAMO_CONVERTERS  # noqa: E402
from torch_tensorrt.dynamo.partitioning._global_partitioner import TorchTensorRTOperatorSupport  # noqa: E402
from trt_compat.patches import convertible_pools as cp  # noqa: E402
from trt_compat.patches import tuple_pooling  # noqa: E402

from trt_compat.probing import Probe  # noqa: E402

aten = torch.ops.aten


@dataclass(frozen=True)
class Outcome:
    blocks: int = 0
    unsupported: Dict[str, int] = field(default_factory=dict)
    error: Optional[str] = None  # what the compile dies of instead (a substring of the inner error)


MAX_POOL = "torch.ops.aten.max_pool2d.default"
ONE_BLOCK = Outcome(1, {})
# 2.3 / 2.4 without trt_compat: #3185, upstream's fused ceil-mode max pool carries a broken val into partitioning.
MISSING_META = "Input max_pool2d_default does not contain metadata"
TUPLE_VAL = "meta val for input node max_pool2d_default is of type : <class 'tuple'>"

UPSTREAM = {
    "googlenet": Outcome(11, {MAX_POOL: 13}),
    "squeezenet1_0": Outcome(4, {MAX_POOL: 3}),
    "inception_v3": ONE_BLOCK,  # its pools are floor-mode and undilated: the control case
    "segnet_ceil": Outcome(
        6,
        {
            "torch.ops.aten.max_pool2d_with_indices.default": 3,
            "_operator.getitem": 6,
            "torch.ops.aten.max_unpool2d.default": 3,
        },
    ),
}
WITH_TRT_COMPAT = {
    "googlenet": ONE_BLOCK,
    "squeezenet1_0": ONE_BLOCK,
    "inception_v3": ONE_BLOCK,
    "segnet_ceil": ONE_BLOCK,
}
# 2.2/2.3 convert no aten.scatter, which tuple_pooling's max_unpool decomposition ends in: each unpool stays in
# PyTorch. Still fewer blocks than upstream's 6.
NO_SCATTER = {**WITH_TRT_COMPAT, "segnet_ceil": Outcome(4, {"torch.ops.aten.scatter.src": 3})}
# Every other patch applied, this one disabled (TRT_COMPAT_DISABLE=convertible_pools): the state issue 15 reports.
OTHERS_ONLY = {"squeezenet1_0": Outcome(4, {MAX_POOL: 3}), "segnet_ceil": Outcome(4, {MAX_POOL: 3})}

# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 2, 0), None)

# release -> (without trt_compat, with trt_compat, with this patch disabled); measured on this harness (2.3.0,
# 2.4.0, 2.5.0, 2.14.0 first; every other row by the compatibility matrix). Every release's validators reject the
# same pools (their text is unchanged from 2.2.0 to 2.14.0), so from 2.5.0 on the rows are the same.
SAME_FROM_2_5 = (UPSTREAM, WITH_TRT_COMPAT, OTHERS_ONLY)
EXPECTED = {
    "2.3.0": (
        {**UPSTREAM, "googlenet": Outcome(error=MISSING_META), "squeezenet1_0": Outcome(error=MISSING_META)},
        NO_SCATTER,
        {**OTHERS_ONLY, "segnet_ceil": Outcome(7, {MAX_POOL: 3, "torch.ops.aten.scatter.src": 3})},
    ),
    "2.4.0": (
        {**UPSTREAM, "googlenet": Outcome(error=TUPLE_VAL), "squeezenet1_0": Outcome(error=TUPLE_VAL)},
        WITH_TRT_COMPAT,
        OTHERS_ONLY,
    ),
    **{
        line: SAME_FROM_2_5
        for line in (
            "2.5.0",
            "2.6.0",
            "2.6.1",
            "2.7.0",
            "2.8.0",
            "2.9.0",
            "2.10.0",
            "2.11.0",
            "2.12.0",
            "2.12.1",
            "2.13.0",
            "2.14.0",
        )
    },
}
# No dryrun on 2.2.0 (the dryrun fixture skips there).
NOT_MEASURABLE = {"2.2.0"}


class SegNetCeil(nn.Module):
    """Three conv+relu+ceil-mode pool stages, three unpool+conv stages using the pools' indices (odd sizes)."""

    def __init__(self, channels=(3, 8, 16, 16), classes=4):
        super().__init__()
        pairs = list(zip(channels, channels[1:]))
        self.encoders = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in pairs)
        self.decoders = nn.ModuleList(
            nn.Conv2d(b, a if depth else classes, 3, padding=1) for depth, (a, b) in enumerate(pairs)
        )
        self.pool = nn.MaxPool2d(2, return_indices=True, ceil_mode=True)
        self.unpool = nn.MaxUnpool2d(2)

    def forward(self, x):
        indices, sizes = [], []
        for conv in self.encoders:
            x = torch.relu(conv(x))
            sizes.append(x.shape[-2:])
            x, index = self.pool(x)
            indices.append(index)
        for depth in reversed(range(len(self.decoders))):
            x = self.decoders[depth](self.unpool(x, indices[depth], output_size=sizes[depth]))
            if depth:
                x = torch.relu(x)
        return x


def model_and_input(name):
    torch.manual_seed(0)
    if name == "googlenet":
        model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
        return model.eval(), torch.randn(1, 3, 64, 64)
    if name == "squeezenet1_0":
        return torchvision.models.squeezenet1_0(weights=None).eval(), torch.randn(1, 3, 64, 64)
    if name == "inception_v3":  # 75 x 75 is the smallest input it accepts
        model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
        return model.eval(), torch.randn(1, 3, 75, 75)
    return SegNetCeil().eval(), torch.randn(1, 3, 30, 30)  # 30 -> 15 -> 8 -> 4: ceil mode rounds up twice


@pytest.fixture
def expected(release_row):
    if release_row.line in NOT_MEASURABLE:
        pytest.skip(f"torch-tensorrt {release_row.line}: no usable dryrun here (see NOT_MEASURABLE)")
    assert release_row.line in EXPECTED, f"add a row for torch-tensorrt {release_row.line} to EXPECTED in {__name__}"
    return EXPECTED[release_row.line]


@dataclass
class Compiled:
    output: torch.Tensor
    blocks: int
    unsupported: Dict[str, int]
    partitioned: torch.fx.GraphModule


def dryrun(model, x, monkeypatch, **options):
    """Compile and run once; the accelerated blocks and the operators the real converter support rejects."""
    unsupported: List[Dict[str, int]] = []
    produced = []
    support_of, compile_module = partitioning.get_graph_converter_support, backends.compile_module

    def support_spy(graph_module, *args, **kwargs):
        support = TorchTensorRTOperatorSupport(torch_executed_ops=options.get("torch_executed_ops", ()))
        modules = dict(graph_module.named_modules())
        for node in graph_module.graph.nodes:
            if node.op == "call_function":
                support.is_node_supported(modules, node)
        unsupported.append(dict(support.unsupported_operators))
        return support_of(graph_module, *args, **kwargs)

    def compile_spy(*args, **kwargs):
        produced.append(compile_module(*args, **kwargs))
        return produced[-1]

    monkeypatch.setattr(partitioning, "get_graph_converter_support", support_spy)
    monkeypatch.setattr(backends, "compile_module", compile_spy)
    compiled = torch.compile(
        model,
        backend="torch_tensorrt",
        options={"dryrun": True, "min_block_size": 1, "pass_through_build_failures": True, **options},
    )
    with torch.no_grad():
        output = compiled(x)
    assert len(produced) == 1 and len(unsupported) == 1, "torch_tensorrt compiled other than exactly once"
    blocks = [name for name, _ in produced[0].named_children() if "_run_on_acc" in name]
    return Compiled(output, len(blocks), unsupported[0], produced[0])


def check(outcome: Outcome, model, x, monkeypatch, **options):
    if outcome.error is not None:
        with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match=re.escape(outcome.error)):
            dryrun(model, x, monkeypatch, **options)
        return
    compiled = dryrun(model, x, monkeypatch, **options)
    assert (compiled.blocks, compiled.unsupported) == (outcome.blocks, outcome.unsupported)
    with torch.no_grad():
        assert torch.equal(compiled.output, model(x))


MODELS = ["googlenet", "squeezenet1_0", "inception_v3", "segnet_ceil"]


@pytest.mark.parametrize("name", MODELS)
def test_without_trt_compat(name, upstream, expected, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch):
    model, x = model_and_input(name)
    check(expected[0][name], model, x, monkeypatch)


@pytest.mark.parametrize("name", MODELS)
def test_with_trt_compat(name, shim, expected, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch):
    assert "convertible_pools" in {p.name for p in shim.patches if p.state == "applied"}
    model, x = model_and_input(name)
    check(expected[1][name], model, x, monkeypatch)


@pytest.fixture
def this_patch_disabled(monkeypatch):
    monkeypatch.setenv("TRT_COMPAT_DISABLE", "convertible_pools")


@pytest.mark.parametrize("name", sorted(OTHERS_ONLY))
def test_disabled_by_the_environment(
    name, this_patch_disabled, shim, expected, dryrun_on_cpu, fresh_dynamo, monkeypatch
):
    assert "convertible_pools" not in {p.name for p in shim.patches if p.state == "applied"}
    model, x = model_and_input(name)
    check(expected[2][name], model, x, monkeypatch)


def test_pool_indices_in_torch_still_exact(shim, expected, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    """TRT_COMPAT_POOL_INDICES=torch: the indices and unpools stay in PyTorch, the ceil-mode values convert."""
    monkeypatch.setenv("TRT_COMPAT_POOL_INDICES", "torch")
    model, x = model_and_input("segnet_ceil")
    compiled = dryrun(model, x, monkeypatch)
    assert compiled.unsupported == {
        "torch.ops.trt_compat.max_pool_indices.default": 3,
        "torch.ops.aten.max_unpool2d.default": 3,
    }
    assert compiled.blocks == 4
    with torch.no_grad():
        assert torch.equal(compiled.output, model(x))


def test_torch_executed_ops_win(shim, expected, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    """Pools the user keeps in PyTorch are not rewritten: the same blocks and operators as upstream's."""
    model, x = model_and_input("squeezenet1_0")
    check(OTHERS_ONLY["squeezenet1_0"], model, x, monkeypatch, torch_executed_ops={MAX_POOL})


def test_runs_after_tuple_pooling(shim, expected):
    """tuple_pooling turns max_poolNd_with_indices into the max_poolNd nodes this pass rewrites: it must come first."""
    from trt_compat.patching import post_lowering_passes

    names = [getattr(entry, "__name__", "") for entry in post_lowering_passes().passes]
    assert names.index("decompose_tuple_pooling") < names.index("make_pools_convertible_for_release")


class PoolBetweenPyTorchOps(nn.Module):
    def forward(self, x):
        return torch.sigmoid(nn.functional.max_pool2d(torch.relu(x), 3, 2, ceil_mode=True))


def test_a_pool_with_no_tensorrt_neighbour_is_not_an_extra_engine(
    shim, expected, dryrun_on_cpu, fresh_dynamo, monkeypatch, caplog
):
    model, x = PoolBetweenPyTorchOps(), torch.randn(1, 2, 8, 8)
    options = {"torch_executed_ops": {"torch.ops.aten.relu.default", "torch.ops.aten.sigmoid.default"}}
    with caplog.at_level(logging.INFO, logger="trt_compat.patches.convertible_pools"):
        compiled = dryrun(model, x, monkeypatch, **options)
    assert compiled.blocks == 0
    assert "extra TensorRT engine" in caplog.text
    with torch.no_grad():
        assert torch.equal(compiled.output, model(x))


# ---------------------------------------------------------------------------------------------------------------
# every node the rewrite emits, against this release's real registry


REWRITES = {
    "max-ceil": (aten.max_pool2d.default, ([3, 3], [2, 2], [1, 1], [1, 1], True)),
    "max-dilated": (aten.max_pool2d.default, ([3, 2], [1, 2], [1, 0], [2, 3], True)),
    "max3d-ceil-dilated": (aten.max_pool3d.default, ([2, 2, 2], [2, 1, 2], [0, 1, 1], [1, 2, 1], True)),
    "avg-ceil": (aten.avg_pool2d.default, ([3, 3], [2, 2], [1, 1], True)),
    "avg-ceil-excluding-padding": (aten.avg_pool2d.default, ([3, 3], [2, 2], [1, 1], True, False)),
    "avg-divisor-is-volume": (aten.avg_pool2d.default, ([3, 3], [2, 2], [0, 0], True, True, 9)),
    "avg1d-ceil": (aten.avg_pool1d.default, ([3], [2], [1], True, False)),
}
SHAPES = {1: (2, 3, 10), 2: (2, 3, 10, 10), 3: (2, 3, 10, 9, 8)}  # sizes where ceil mode adds a window


class Pool(nn.Module):
    def __init__(self, op, args):
        super().__init__()
        self.op, self.args = op, args

    def forward(self, x):
        return self.op(x * 2.0, *self.args)


def exported(op, args, x, dynamic):
    """Exported and decomposed as Torch-TensorRT does, then tuple_pooling (max pools come out with indices)."""
    import torch_tensorrt.dynamo.lowering as lowering

    shapes = {"x": {0: torch.export.Dim("batch", min=2, max=8)}} if dynamic else None
    program = torch.export.export(Pool(op, args), (x,), dynamic_shapes=shapes)
    return tuple_pooling.decompose_tuple_pooling(
        program.run_decompositions(lowering.get_decompositions(False)).graph_module, "tensorrt"
    )


@pytest.mark.parametrize("case", list(REWRITES))
def test_every_emitted_node_converts_on_this_release(case):
    op, args = REWRITES[case]
    x = torch.randn(SHAPES[len(args[0])])
    gm = exported(op, args, x, dynamic=False)
    pools = [node for node in gm.graph.nodes if cp._is_pool(node)]
    assert len(pools) == 1 and pools[0] not in DYNAMO_CONVERTERS  # rejected as it is
    cp.make_pools_convertible(gm, accepts=DYNAMO_CONVERTERS.__contains__)
    calls = [node for node in gm.graph.nodes if node.op == "call_function"]
    assert len(calls) > 2  # x * 2.0, then more than one pool
    assert [str(node.target) for node in calls if node not in DYNAMO_CONVERTERS] == []
    assert torch.equal(gm(x)[0], op(x * 2.0, *args))


@pytest.mark.parametrize(
    "case, rejected_on_2_3_and_2_4",
    [("max-ceil", "aten.constant_pad_nd.default"), ("avg-ceil", "aten.avg_pool2d.default")],
)
def test_symbolic_batch_is_rewritten_only_where_the_registry_converts_it(
    case, rejected_on_2_3_and_2_4, release, caplog
):
    """2.3/2.4 register constant_pad_nd and avg_poolNd for static shapes only: there the pool stays as it was and
    the log names the op; from 2.5 every emitted op converts with a symbolic batch size. 2.2.0's registry has no
    notion of dynamic shapes (every converter is offered any graph), so there the pool is rewritten too."""
    op, args = REWRITES[case]
    x = torch.randn(SHAPES[2])
    gm = exported(op, args, x, dynamic=True)
    with caplog.at_level(logging.INFO, logger=cp.__name__):
        cp.make_pools_convertible(gm, accepts=DYNAMO_CONVERTERS.__contains__)
    pools = [node for node in gm.graph.nodes if cp._is_pool(node)]
    left_alone = [node for node in pools if not cp.validators_of_every_release(node)]
    if (2, 3, 0) <= release < (2, 5, 0):
        assert len(left_alone) == 1 and "which this release does not convert here" in caplog.text
        assert rejected_on_2_3_and_2_4 in caplog.text.split("its replacement needs ", 1)[1].split(", which")[0]
    else:
        assert pools and not left_alone
        assert all(node in DYNAMO_CONVERTERS for node in gm.graph.nodes if node.op == "call_function")
    for batch in (3, 5):
        inputs = torch.randn(batch, *SHAPES[2][1:])
        assert torch.equal(gm(inputs)[0], op(inputs * 2.0, *args))


# ---------------------------------------------------------------------------------------------------------------
# the declared defect: present without trt_compat, gone with it


def test_defect_present_without_trt_compat(upstream, expected, dryrun_on_cpu, fresh_dynamo):
    found = cp.check_pool_graph_break(Probe())
    assert found == (
        "ceil-mode and dilated pools are graph breaks: 2 TensorRT blocks, aten.avg_pool2d.default, "
        "aten.max_pool2d.default in PyTorch"
    )


def test_defect_gone_with_trt_compat(shim, expected, dryrun_on_cpu, fresh_dynamo):
    assert cp.check_pool_graph_break(Probe()) is None

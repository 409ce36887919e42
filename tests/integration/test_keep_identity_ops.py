"""keep_identity_ops on the real Torch-TensorRT ``torch.compile`` backend, with and without trt_compat.

From 2.12.0 the backend's ``fold_get_attr_item_calls`` removes every clone/contiguous/detach of the Dynamo graph
before AOT tracing. Each model below is compiled with ``options={"dryrun": True, "min_block_size": 1,
"pass_through_build_failures": True}`` (without the last one the backend answers a failure by silently running
the model in eager, which would hide everything); a spy on ``backends.compile_module`` proves the partitioned
path ran. Outputs are compared with eager bit for bit (``torch.equal``): dryrun runs the partitioned graph in
PyTorch, so this says nothing about TensorRT engines' numerics, only that the graph computes the model. The
``eager_fallback`` tests keep upstream's default (fall back to PyTorch when a build fails) on purpose: the
fallback runs the graph the folding pass has already changed.

What upstream does on each release, as measured, is the table ``UPSTREAM``: a change in a new wheel fails a test
here instead of silently making the patch moot (or a defect appear).

About ``.item()``: with Dynamo's default configuration an ``.item()`` breaks the graph, so a chain such as
``self.scale.clone().item()`` never reaches the backend in one graph (the clone ends one graph, the number is
specialised into the next). The chain reaches the backend, and upstream's folding matters, only with
``torch._dynamo.config.capture_scalar_outputs = True``: the ``.item()`` models are compiled that way, and
``test_item_chain_reaches_the_backend_only_when_scalars_are_captured`` shows the difference.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Dict, List

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from torch import nn  # noqa: E402

FOLD_MODULE = "torch_tensorrt.dynamo.lowering.passes.fold_get_attr_item_calls"

# Outcomes of one compile, compared with eager.
EQUAL = "equal"  # torch.equal to eager
DIFFERS = "differs"  # compiles, runs, output not equal to eager: wrong numbers
STALE = "stale"  # the first call equals eager, a later call with another input still gives the first call's result
CLOSE = "close"  # within 1e-6 of eager but not bit-equal: upstream's lowering computes it with other kernels


@dataclass(frozen=True)
class Fails:
    """The compile fails; ``error`` is a regex of ``"<ExceptionType>: <message>"`` of the backend's exception."""

    error: str


CANNOT_VIEW = r"ValueError: Cannot view a tensor with shape torch\.Size\(\[2, 5, 4, 8\]\) and strides"
# Before 2.11: a captured scalar becomes an input of a TensorRT block, which construct_submodule_inputs rejects.
SYMFLOAT_INPUT = r"ValueError: The meta val for input node _local_scalar_dense is of type : <class 'torch\.SymFloat'>"
NO_METADATA = r"AssertionError: Input linear_default does not contain metadata"
# 2.3/2.4: an in-place update of a buffer's clone trips an assertion in upstream's lowering.
BARE_ASSERTION = r"^AssertionError: $"
COPY_ASSERTION = r"AssertionError: n=copy_, n\.args\[0\]=clone"


@dataclass(frozen=True)
class Upstream:
    """What unpatched upstream does with each model on one release (measured on this harness)."""

    fold_pass: bool  # the release has fold_get_attr_item_calls (and so the patch applies)
    without: Dict[str, object]  # model -> outcome without trt_compat (empty: the release has no dryrun)
    # model -> outcome with trt_compat where it is not EQUAL: upstream failures trt_compat does not address
    with_: Dict[str, object] = field(default_factory=dict)


MODEL_NAMES = (
    "attention",
    "multihead_attention",
    "clone_mul",
    "clone_add",
    "clone_index_assign",
    "scale_clone_item",
    "param_detach_item",
    "input_clone_item",
    "mutated_clone_item",
)
ITEM_MODELS = ("scale_clone_item", "param_detach_item", "input_clone_item", "mutated_clone_item")
ALL_EQUAL = {name: EQUAL for name in MODEL_NAMES}
SCALARS_REJECTED = {name: Fails(SYMFLOAT_INPUT) for name in ITEM_MODELS}


def unaffected(without, **with_trt_compat):
    """A release without the folding pass: trt_compat does not touch it, so each model does with it what it does
    without, except where ``with_trt_compat`` says (another patch turns one upstream failure into another)."""
    return Upstream(
        fold_pass=False,
        without=without,
        with_={**{name: outcome for name, outcome in without.items() if outcome != EQUAL}, **with_trt_compat},
    )


AFFECTED = Upstream(
    fold_pass=True,
    without={
        "attention": Fails(CANNOT_VIEW),
        # Not this defect: nn.MultiheadAttention is one call in the Dynamo graph (its views are traced by AOT);
        # the lowered graph uses other ATen kernels than eager (addmm/bmm projections): within 2e-7, as on 2.11.
        "multihead_attention": CLOSE,
        "clone_mul": DIFFERS,
        "clone_add": DIFFERS,
        "clone_index_assign": DIFFERS,
        "scale_clone_item": EQUAL,  # upstream folds it correctly: the patch must keep that
        "param_detach_item": EQUAL,
        "input_clone_item": STALE,  # folded, so the second call still uses the first call's value
        "mutated_clone_item": DIFFERS,  # folded to the buffer's value, not the clone's updated one
    },
    with_={"multihead_attention": CLOSE},
)

# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 12, 0), None)

UPSTREAM = {
    "2.2.0": unaffected({}),  # no dryrun: only the presence of the pass is checked
    "2.3.0": unaffected(
        {
            **ALL_EQUAL,
            "multihead_attention": CLOSE,
            "scale_clone_item": Fails(SYMFLOAT_INPUT),
            "input_clone_item": Fails(SYMFLOAT_INPUT),
            "mutated_clone_item": Fails(BARE_ASSERTION),
        }
    ),
    "2.4.0": unaffected(
        {
            **ALL_EQUAL,
            "multihead_attention": CLOSE,
            "scale_clone_item": Fails(SYMFLOAT_INPUT),
            "input_clone_item": Fails(SYMFLOAT_INPUT),
            "mutated_clone_item": Fails(COPY_ASSERTION),
        }
    ),
    # tuple_partition_inputs repairs the missing metadata; the scalar input is rejected next.
    "2.5.0": unaffected(
        {**ALL_EQUAL, **SCALARS_REJECTED, "scale_clone_item": Fails(NO_METADATA)},
        scale_clone_item=Fails(SYMFLOAT_INPUT),
    ),
    "2.6.0": unaffected({**ALL_EQUAL, **SCALARS_REJECTED}),
    "2.6.1": unaffected({**ALL_EQUAL, **SCALARS_REJECTED}),
    "2.7.0": unaffected({**ALL_EQUAL, **SCALARS_REJECTED}),
    "2.8.0": unaffected({**ALL_EQUAL, **SCALARS_REJECTED}),
    "2.9.0": unaffected({**ALL_EQUAL, **SCALARS_REJECTED}),
    "2.10.0": unaffected({**ALL_EQUAL, "multihead_attention": CLOSE}),
    "2.11.0": unaffected({**ALL_EQUAL, "multihead_attention": CLOSE}),
    "2.12.0": AFFECTED,
    "2.12.1": AFFECTED,
    "2.13.0": AFFECTED,
    "2.14.0": AFFECTED,
}


@pytest.fixture
def expect(release_row):
    if release_row.line not in UPSTREAM:
        pytest.fail(
            f"add a row for {release_row.line} to UPSTREAM in {__name__}: measure each model without "
            "trt_compat on that release"
        )
    return UPSTREAM[release_row.line]


# --------------------------------------------------------------------------------------------- models


class ManualAttention(nn.Module):
    """GPT-style attention: heads back into channels with ``transpose(1, 2).contiguous().view(B, T, C)``."""

    def __init__(self, channels=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x):
        batch, tokens, channels = x.shape
        q, k, v = self.qkv(x).split(channels, dim=2)
        q, k, v = (t.view(batch, tokens, self.heads, channels // self.heads).transpose(1, 2) for t in (q, k, v))
        y = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, dim=-1) @ v
        return self.proj(y.transpose(1, 2).contiguous().view(batch, tokens, channels))


class MultiheadAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


class CloneMul(nn.Module):
    def forward(self, x):
        y = x.clone()
        y.mul_(2)
        return x + y


class CloneAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x):
        y = self.linear(x)
        z = y.clone()
        z.add_(1.0)
        return y * z


class CloneIndexAssign(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x):
        y = self.linear(x)
        z = y.clone()
        z[:, 0] = 0
        return y - z


class ScaleCloneItem(nn.Module):
    """What the folding is for: a scalar parameter read with ``.item()``, here through a clone."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return self.linear(x) * self.scale.clone().item()


class ParamDetachItem(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.eps = nn.Parameter(torch.tensor(0.25))

    def forward(self, x):
        return self.linear(x) + self.eps.detach().item()


class InputCloneItem(nn.Module):
    """An ordinary input's ``.item()``: its value changes from call to call, so it must not be folded."""

    def forward(self, x, t):
        return x * t.clone().item()


class MutatedCloneItem(nn.Module):
    """A buffer's clone changed in place before ``.item()``: folding the buffer's value would be wrong."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x):
        c = self.scale.clone()
        c.add_(1.0)
        return x * c.item()


MODELS = {
    "attention": (ManualAttention, lambda: (torch.randn(2, 5, 32),)),
    "multihead_attention": (MultiheadAttention, lambda: (torch.randn(2, 5, 32),)),
    "clone_mul": (CloneMul, lambda: (torch.ones(2, 3),)),
    "clone_add": (CloneAdd, lambda: (torch.randn(4, 8),)),
    "clone_index_assign": (CloneIndexAssign, lambda: (torch.randn(4, 8),)),
    "scale_clone_item": (ScaleCloneItem, lambda: (torch.randn(4, 8),)),
    "param_detach_item": (ParamDetachItem, lambda: (torch.randn(4, 8),)),
    "input_clone_item": (InputCloneItem, lambda: (torch.randn(4, 8), torch.tensor(3.0))),
    "mutated_clone_item": (MutatedCloneItem, lambda: (torch.randn(4, 8),)),
}
assert tuple(MODELS) == MODEL_NAMES
# The .item() calls upstream's folding is meant to fold, and does, with or without trt_compat.
FOLDED = {"scale_clone_item", "param_detach_item"}


# --------------------------------------------------------------------------------------------- compiling


@pytest.fixture(autouse=True)
def restore_scalar_capture():
    # Dynamo's config module does not take monkeypatch.setattr.
    previous = torch._dynamo.config.capture_scalar_outputs
    yield
    torch._dynamo.config.capture_scalar_outputs = previous


@dataclass
class Compile:
    compiled: object
    partitioned: List[object]  # what backends.compile_module returned, once per compiled graph
    traced: List[torch.fx.Graph]  # the graphs handed to AOT tracing


def dryrun(model, monkeypatch, capture_scalars=False):
    """torch.compile with the Torch-TensorRT backend in dryrun, spying on what reaches AOT tracing and partitioning."""
    from torch_tensorrt.dynamo.backend import backends

    result = Compile(None, [], [])
    compile_module, aot_export = backends.compile_module, backends.aot_export_joint_simple

    def compile_module_spy(*args, **kwargs):
        result.partitioned.append(compile_module(*args, **kwargs))
        return result.partitioned[-1]

    def aot_export_spy(gm, *args, **kwargs):
        result.traced.append(torch.fx.Graph())
        result.traced[-1].graph_copy(gm.graph, {})
        return aot_export(gm, *args, **kwargs)

    monkeypatch.setattr(backends, "compile_module", compile_module_spy)
    monkeypatch.setattr(backends, "aot_export_joint_simple", aot_export_spy)
    torch._dynamo.config.capture_scalar_outputs = capture_scalars  # restored by restore_scalar_capture
    result.compiled = torch.compile(
        model,
        backend="torch_tensorrt",
        options={"dryrun": True, "min_block_size": 1, "pass_through_build_failures": True},
    )
    return result


def describe(exc):
    return f"{type(exc).__name__}: {exc}"


def outcome_of(name, monkeypatch):
    """Compile and run model ``name``; the outcome (EQUAL, DIFFERS, ...) and the spies' records."""
    model_cls, make_inputs = MODELS[name]
    torch.manual_seed(0)
    model, inputs = model_cls().eval(), make_inputs()
    torch.manual_seed(0)
    eager_model = model_cls().eval()  # separate state: MutatedCloneItem must not share buffers with the compile
    run = dryrun(model, monkeypatch, capture_scalars=name in ITEM_MODELS)
    with torch.no_grad():
        try:
            output = run.compiled(*inputs)
        except torch._dynamo.exc.BackendCompilerFailed as failed:
            return describe(failed.inner_exception), run
        expected = eager_model(*inputs)
        assert len(run.partitioned) == 1, "torch_tensorrt's compile_module did not run exactly once"
        if name == "input_clone_item":
            later = (inputs[0], torch.tensor(5.0))
            if torch.equal(output, expected) and not torch.equal(run.compiled(*later), eager_model(*later)):
                return STALE, run
    if torch.equal(output, expected):
        return EQUAL, run
    if torch.allclose(output, expected, rtol=0, atol=1e-6):
        return CLOSE, run
    return DIFFERS, run


def assert_outcome(actual, expected):
    if isinstance(expected, Fails):
        assert re.search(expected.error, actual), actual
    else:
        assert actual == expected


def items_reaching_aot(run):
    return sum(1 for graph in run.traced for node in graph.nodes if node.op == "call_method" and node.target == "item")


def dynamo_identity_nodes(run):
    """Dynamo's identity nodes (call_method form) still in the graphs handed to AOT tracing."""
    return sorted(
        node.target
        for graph in run.traced
        for node in graph.nodes
        if node.op == "call_method" and node.target in ("clone", "contiguous", "detach")
    )


# --------------------------------------------------------------------------------------------- tests


def test_fold_pass_presence_decides_the_patch(expect, shim):
    import trt_compat

    assert (importlib.util.find_spec(FOLD_MODULE) is not None) == expect.fold_pass
    states = {patch["name"]: patch["state"] for patch in trt_compat.report_dict()["patches"]}
    assert states["keep_identity_ops"] == ("applied" if expect.fold_pass else "not_needed")


@pytest.mark.parametrize("name", list(MODELS))
def test_without_trt_compat(name, upstream, expect, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch):
    actual, run = outcome_of(name, monkeypatch)
    assert_outcome(actual, expect.without[name])


def shim_applied(name):
    import trt_compat

    return trt_compat.is_applied(name)


@pytest.mark.parametrize("name", list(MODELS))
def test_with_trt_compat(name, shim, expect, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch):
    actual, run = outcome_of(name, monkeypatch)
    assert_outcome(actual, expect.with_.get(name, EQUAL))
    if expect.fold_pass and name in FOLDED:
        # The chain to the parameter's .item() is gone (this patch's own work); the .item() itself is folded by
        # upstream unless fold_only_constants, which folds graph constants only, keeps it in the graph.
        assert dynamo_identity_nodes(run) == []
        folds_parameters = not shim_applied("fold_only_constants")
        assert items_reaching_aot(run) == (0 if folds_parameters else 1)


@pytest.mark.parametrize("name", ["attention", "clone_mul", "clone_index_assign"])
def test_identity_nodes_reach_aot_tracing_with_trt_compat(
    name, shim, expect, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch
):
    actual, run = outcome_of(name, monkeypatch)
    assert dynamo_identity_nodes(run) == (["contiguous"] if name == "attention" else ["clone"])


@pytest.mark.parametrize("name", ["attention", "clone_mul"])
def test_identity_nodes_are_gone_before_aot_tracing_without_trt_compat(
    name, upstream, expect, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch
):
    actual, run = outcome_of(name, monkeypatch)
    assert dynamo_identity_nodes(run) == (
        [] if expect.fold_pass else (["contiguous"] if name == "attention" else ["clone"])
    )


def eager_fallback_output(monkeypatch):
    """CloneMul compiled with upstream's defaults when the TensorRT build fails: the backend returns its graph."""
    from torch_tensorrt.dynamo.backend import backends

    def failing_build(*args, **kwargs):
        raise RuntimeError("TensorRT build failed (simulated)")

    monkeypatch.setattr(backends, "compile_module", failing_build)
    compiled = torch.compile(CloneMul(), backend="torch_tensorrt", options={"dryrun": True, "min_block_size": 1})
    with torch.no_grad():
        return compiled(torch.ones(2, 3))


def test_eager_fallback_without_trt_compat(upstream, expect, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    """Without pass_through_build_failures a failed build falls back to the graph the folding already stripped."""
    output = eager_fallback_output(monkeypatch)
    assert torch.equal(output, CloneMul()(torch.ones(2, 3))) != expect.fold_pass


def test_eager_fallback_with_trt_compat(shim, expect, dryrun_on_cpu, fresh_dynamo, monkeypatch):
    assert torch.equal(eager_fallback_output(monkeypatch), CloneMul()(torch.ones(2, 3)))


def test_item_chain_reaches_the_backend_only_when_scalars_are_captured(
    upstream, expect, dryrun_on_cpu, constants_on_cpu, fresh_dynamo, monkeypatch
):
    """Dynamo's default breaks the graph at .item(): no graph holds the chain and its .item() together."""
    from torch_tensorrt.dynamo.backend import backends

    graphs = []
    pretraced = backends._pretraced_backend

    def record(gm, *args, **kwargs):
        graphs.append([(node.op, node.target, [a.target for a in node.all_input_nodes]) for node in gm.graph.nodes])
        return pretraced(gm, *args, **kwargs)

    monkeypatch.setattr(backends, "_pretraced_backend", record)
    for capture in (False, True):
        graphs.clear()
        torch._dynamo.reset()
        run = dryrun(ParamDetachItem().eval(), monkeypatch, capture_scalars=capture)
        with torch.no_grad(), contextlib.suppress(torch._dynamo.exc.BackendCompilerFailed):
            run.compiled(torch.randn(4, 8))  # only what reaches the backend matters here (2.5 fails after that)
        chains = [
            node
            for graph in graphs
            for node in graph
            if node[:2] == ("call_method", "item") and any(other[:2] == ("call_method", "detach") for other in graph)
        ]
        assert bool(chains) == capture, (capture, graphs)


# --------------------------------------------------------------------------------------------- the shipped checks


def defect_checks(patched):
    """The patch's defect checks and a probe; importing trt_compat applies every patch, so revert for "without"."""
    from trt_compat.patches.keep_identity_ops import PATCH

    import trt_compat
    from trt_compat.probing import Probe

    if not patched:
        trt_compat.revert()
    return {defect.key: defect.check for defect in PATCH.defects}, Probe()


@pytest.mark.parametrize("key", ["clone_mutation", "contiguous_view"])
def test_defect_check_without_trt_compat(key, upstream, expect, fresh_dynamo):
    from trt_compat.patching import NotApplicable

    checks, probe = defect_checks(patched=False)
    if not expect.fold_pass:
        with pytest.raises(NotApplicable):
            checks[key](probe)
        return
    found = checks[key](probe)
    assert found is not None and "\n" not in found
    assert ("differs from eager by up to 1" if key == "clone_mutation" else "Cannot view a tensor") in found, found


@pytest.mark.parametrize("key", ["clone_mutation", "contiguous_view"])
def test_defect_check_with_trt_compat(key, shim, expect, fresh_dynamo):
    if not expect.fold_pass:
        pytest.skip("NotApplicable here, as shown without trt_compat")
    checks, probe = defect_checks(patched=True)
    assert checks[key](probe) is None

"""keep_scatter_layout on the real Torch-TensorRT, both compile paths, with and without trt_compat.

2.4.0-2.13.x decompose ``aten.slice_scatter`` (and ``select_scatter`` through it) into a contiguous ``scatter``
during AOT tracing (and, from torch 2.6, on the export path too); a later ``.contiguous()`` of what was a
transposed tensor is then traced as an alias, and an in-place change of it changes the original. Each model is
compiled in dryrun (``trt_compat.probing.Probe``: ``min_block_size=1``, ``pass_through_build_failures=True``) with
the multiplications kept in PyTorch (2.10.0's dryrun cannot finish a graph whose output a TensorRT block produces),
or exported and lowered as ``torch_tensorrt.compile(ir="dynamo")`` does, and compared with eager bit for bit. The
graphs run in PyTorch: this says nothing about TensorRT engines' numerics, only that the graph computes the model.

``DECOMPOSES`` says, per release, whether upstream registers the decomposition (read from each release's code for
the rows marked "read"; the compatibility matrix measures every row): a change in a new wheel fails a test here.
"""

from __future__ import annotations

import pytest

from tests.harness import activate

_REASON = activate.unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import torch  # noqa: E402
from trt_compat.patches import keep_scatter_layout as ksl  # noqa: E402

# The patch's range, stated independently of it (checked against the report by test_defects' activation tests).
STATED_RANGE = ((2, 4, 0), (2, 14, 0))

DECOMPOSES = {
    "2.2.0": False,
    "2.3.0": False,  # read
    "2.4.0": True,
    "2.5.0": True,
    "2.6.0": True,
    "2.6.1": True,
    "2.7.0": True,
    "2.8.0": True,
    "2.9.0": True,
    "2.10.0": True,
    "2.11.0": True,
    "2.12.0": True,
    "2.12.1": True,
    "2.13.0": True,
    "2.14.0": False,  # read: "slice_scatter is intentionally NOT registered" (a converter handles it)
}


def row_update(x):
    x = x.transpose(2, 3).clone()
    x[:, 0] += x[:, -1]
    x = x * 0.25
    y = x.contiguous()
    y.add_(2)
    return x * y


def slice_update(x):
    x = x.permute(0, 2, 1).clone()
    x[:, 1:3] = x[:, 1:3] * 2
    x = x * 1.5
    y = x.contiguous()
    y.mul_(3)
    return x * y


class Function(torch.nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


MODELS = {
    "row": (row_update, (2, 4, 9, 7)),
    "slice": (slice_update, (2, 3, 5)),
}


@pytest.fixture
def decomposes(release_row):
    if release_row.line not in DECOMPOSES:
        pytest.fail(f"add {release_row.line} to DECOMPOSES (measure it with this test file)")
    return DECOMPOSES[release_row.line]


def compare(name):
    """None when the compiled model equals eager bit for bit, else the difference in words."""
    from trt_compat.probing import Probe

    function, shape = MODELS[name]
    model, x = Function(function).eval(), torch.linspace(-1.0, 1.0, torch.Size(shape).numel()).view(shape)
    probe = Probe()
    compiled = probe.compile(model, x, torch_executed_ops={torch.ops.aten.mul.Tensor})
    return probe.same(compiled.output, model(x))


def test_release_decomposes_slice_scatter_as_stated(decomposes, release):
    from torch_tensorrt.dynamo.lowering import _decompositions

    assert (torch.ops.aten.slice_scatter.default in _decompositions.TORCH_TRT_DECOMPOSITIONS) == decomposes
    first, fixed = STATED_RANGE
    assert decomposes == (first <= release < fixed)


@pytest.mark.parametrize("name", list(MODELS))
def test_defect_present_without_trt_compat(name, upstream, decomposes, release, release_row, fresh_dynamo):
    if release_row.line == "2.2.0":
        pytest.skip("2.2.0 has no dryrun")
    difference = compare(name)
    # From 2.12.0 the backend also removes the .contiguous() itself before tracing (keep_identity_ops' defect).
    if decomposes or release >= (2, 12, 0):
        assert difference is not None and "differs from eager by up to" in difference, difference
    else:
        assert difference is None


@pytest.fixture
def every_patch_but_this_one(monkeypatch):
    import trt_compat

    trt_compat.revert()
    monkeypatch.setenv("TRT_COMPAT_DISABLE", "keep_scatter_layout")
    report = trt_compat.apply()
    yield report
    trt_compat.revert()


@pytest.mark.parametrize("name", list(MODELS))
def test_only_this_patch_fixes_it(name, every_patch_but_this_one, decomposes, release_row, fresh_dynamo):
    """Every other patch applied (keep_identity_ops among them on 2.12+): the difference is this defect's."""
    if release_row.line == "2.2.0":
        pytest.skip("2.2.0 has no dryrun")
    difference = compare(name)
    assert (difference is not None) == decomposes, difference


@pytest.mark.parametrize("name", list(MODELS))
def test_defect_gone_with_trt_compat(name, shim, release_row, fresh_dynamo):
    if release_row.line == "2.2.0":
        pytest.skip("2.2.0 has no dryrun")
    assert compare(name) is None


def test_declared_check(upstream, decomposes, fresh_dynamo):
    from trt_compat.patching import NotApplicable
    from trt_compat.probing import Probe

    (defect,) = ksl.PATCH.defects
    if not decomposes:
        with pytest.raises(NotApplicable):
            defect.check(Probe())
        return
    found = defect.check(Probe())
    assert found is not None and "differs from eager by up to 4.62" in found, found


def test_declared_check_with_trt_compat(shim, decomposes, fresh_dynamo):
    from trt_compat.probing import Probe

    if not decomposes:
        pytest.skip("NotApplicable here, as shown without trt_compat")
    assert ksl.PATCH.defects[0].check(Probe()) is None


def test_revert_restores_upstreams_decomposition(shim, decomposes):
    from torch_tensorrt.dynamo.lowering import _decompositions

    import trt_compat

    if not decomposes:
        pytest.skip("nothing to wrap on this release")
    table = _decompositions.TORCH_TRT_DECOMPOSITIONS
    installed = table[torch.ops.aten.slice_scatter.default]
    assert installed.__trt_compat_patch__ == "keep_scatter_layout"
    trt_compat.revert()
    assert table[torch.ops.aten.slice_scatter.default] is installed.__wrapped__


def exported_difference(name):
    """The export path (``torch_tensorrt.compile(ir="dynamo")``'s lowering: export, Torch-TensorRT's decompositions,
    post-lowering passes), its graph run in PyTorch and compared with eager bit for bit."""
    from trt_compat.probing import Probe

    function, shape = MODELS[name]
    model, x = Function(function).eval(), torch.linspace(-1.0, 1.0, torch.Size(shape).numel()).view(shape)
    probe = Probe()
    return probe.same(probe.export_and_lower(model, x)(x), model(x))


# The export path decides aliasing before Torch-TensorRT's decompositions up to torch 2.5 (measured: exact on 2.4.0
# and 2.5.0 without trt_compat); from torch 2.6 they run inside its functionalization (measured: wrong on 2.9.0,
# 2.12.1 and 2.13.0; the other rows are measured by the matrix).
EXPORT_PATH_AFFECTED_FROM = (2, 6, 0)


# torch 2.8's export calls slice_scatter(x, src) for a whole-tensor row update, without the dim upstream's
# decomposition requires: the export path fails there (the patch passes the schema's default).
EXPORT_PATH_MISSING_DIM = {("2.8.0", "row")}


@pytest.mark.parametrize("name", list(MODELS))
def test_export_path_has_the_defect_without_trt_compat(
    name, upstream, decomposes, release, release_row, constants_on_cpu
):
    if (release_row.line, name) in EXPORT_PATH_MISSING_DIM:
        with pytest.raises(TypeError, match="missing 1 required positional argument: 'dim'"):
            exported_difference(name)
        return
    difference = exported_difference(name)
    assert (difference is not None) == (decomposes and release >= EXPORT_PATH_AFFECTED_FROM), difference


@pytest.mark.parametrize("name", list(MODELS))
def test_export_path_is_exact_with_trt_compat(name, shim, constants_on_cpu):
    assert exported_difference(name) is None

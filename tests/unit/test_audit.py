"""trt_compat.audit on plain torch.export graphs, without Torch-TensorRT: the check itself, the pass wrapper's
attribution of a mismatch to the pass that introduced it, strict mode, and that the audit never breaks a pass.
The real pass list is audited in tests/integration/test_audit.py.
"""

import subprocess
import sys

import pytest
import torch
from trt_compat.patches.view_to_reshape_metadata import replace_views_with_reshapes

from trt_compat import audit


class Views(torch.nn.Module):
    def forward(self, x):
        return x.view(6, 4) + 1, x.view(24) * 2


def exported():
    return torch.export.export(Views(), (torch.randn(2, 3, 4),)).run_decompositions().graph_module


def views(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.view.default]


def swap_view_vals(gm, *_):
    """What upstream's view_to_reshape does on 2.3-2.5: two views trade metadata."""
    first, second = views(gm)
    first.meta, second.meta = second.meta, first.meta
    return gm


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    monkeypatch.delenv("TRT_COMPAT_STRICT", raising=False)
    audit.clear()
    yield
    audit.clear()


def test_a_correct_graph_has_no_mismatches():
    gm = exported()
    assert audit.mismatches(gm) == []
    assert audit.mismatches(replace_views_with_reshapes(gm)) == []


def test_swapped_metadata_is_named():
    found = audit.mismatches(swap_view_vals(exported()))
    assert [str(m) for m in found] == [
        "node 'view' (aten.view.default): meta['val'] is Tensor[24] float32, "
        "fake propagation gives Tensor[6, 4] float32",
        "node 'view_1' (aten.view.default): meta['val'] is Tensor[6, 4] float32, "
        "fake propagation gives Tensor[24] float32",
    ]


def test_tuple_and_missing_vals_are_named():
    gm = exported()
    first, second = views(gm)
    first.meta["val"] = (first.meta["val"], first.meta["val"])
    del second.meta["val"]
    second.meta.pop("tensor_meta", None)
    found = {m.node: (m.recorded, m.propagated) for m in audit.mismatches(gm)}
    assert found == {
        "view": ("(Tensor[6, 4] float32, Tensor[6, 4] float32)", "Tensor[6, 4] float32"),
        "view_1": ("missing", "Tensor[24] float32"),
    }


def test_the_wrapper_blames_the_pass_that_broke_it_and_no_later_one():
    gm = exported()
    broken = audit._audited(swap_view_vals)
    later = audit._audited(replace_views_with_reshapes)
    assert later(broken(gm, "sample inputs")) is gm
    found = audit.findings()
    assert [(f.pass_name, f.node) for f in found] == [("swap_view_vals", "view"), ("swap_view_vals", "view_1")]
    assert broken.__name__ == "swap_view_vals" and broken.__wrapped__ is swap_view_vals


def test_strict_mode_raises_after_the_pass(monkeypatch):
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with pytest.raises(audit.AuditError, match=r"lowering pass 'swap_view_vals' broke meta\['val'\] of node 'view'"):
        audit._audited(swap_view_vals)(exported())


def test_the_audit_failing_never_fails_the_pass(monkeypatch, caplog):
    def pass_returning_something_odd(graph_module, *_):
        return "not a graph module"

    assert audit._audited(pass_returning_something_odd)(exported()) == "not a graph module"

    def raising_pass(graph_module, *_):
        raise ValueError("the pass's own error")

    with pytest.raises(ValueError, match="the pass's own error"):
        audit._audited(raising_pass)(exported())

    def audit_bug(gm):
        raise RuntimeError("a bug in the audit")

    monkeypatch.setattr(audit, "mismatches", audit_bug)
    gm = exported()
    assert audit._audited(swap_view_vals)(gm) is gm
    assert "could not check the graph around pass 'swap_view_vals': RuntimeError: a bug in the audit" in caplog.text
    assert audit.findings() == []


def test_propagation_failure_is_reported_at_its_node():
    gm = exported()
    first, _ = views(gm)
    first.args = (first.args[0], [5, 5])  # 24 elements cannot be viewed as 5x5
    (mismatch,) = audit.mismatches(gm)
    assert mismatch.node == "view" and mismatch.propagated.startswith("an error (")


def test_graph_without_fake_inputs_is_not_checked():
    gm = exported()
    for node in gm.graph.nodes:
        node.meta.pop("val", None)
    assert audit.mismatches(gm) == []


def test_enable_without_torch_tensorrt_wraps_nothing_and_raises_nothing():
    assert "torch_tensorrt" not in sys.modules
    audit.enable()
    try:
        assert audit.is_enabled() and audit._installed == []
    finally:
        audit.disable()
    assert audit.is_enabled() is False


def test_env_switch_and_api_precedence(monkeypatch):
    monkeypatch.setattr(audit, "_api_switch", None)
    monkeypatch.setenv("TRT_COMPAT_AUDIT", "1")
    assert audit.is_enabled()
    monkeypatch.setenv("TRT_COMPAT_AUDIT", "0")
    assert not audit.is_enabled()
    with audit.auditing() as found:
        assert audit.is_enabled()
    assert found == [] and not audit.is_enabled()


def test_importing_the_audit_imports_no_torch():
    code = "import sys, trt_compat.audit; print([m for m in ('torch', 'torch_tensorrt') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr

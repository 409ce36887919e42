"""keep_input_items without Torch-TensorRT: which Dynamo graph inputs are module state (folded as before) and which
are the call's own inputs (left in the graph), on graphs captured by a custom torch.compile backend; and ``apply`` on a
stand-in of upstream's folding module, exactly undone. The real backend is tested in
tests/integration/test_keep_input_items.py.
"""

import textwrap
import types

import pytest
import torch
from trt_compat.patches import keep_input_items

from trt_compat import testing
from trt_compat.patching import TargetChanged


class Everything(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(3.0))
        self.register_buffer("count", torch.tensor(4.0))
        self.plain = torch.tensor(5.0)

    def forward(self, x, s):
        return x * s.item() + self.weight.item() + self.count.item() + self.plain.item()


def classified(model, *inputs):
    """{what each placeholder or get_attr reads: is_module_state} inside the backend call, where Dynamo's records
    of the inputs' sources are still attached."""
    found = {}

    def backend(gm, example_inputs):
        for node in gm.graph.nodes:
            for user in node.users:
                if user.op == "call_method" and user.target == "item":
                    found[user.name] = keep_input_items.is_module_state(node)
        return gm.forward

    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(capture_scalar_outputs=True):
            torch.compile(model, backend=backend, fullgraph=True)(*inputs)
    finally:
        torch._dynamo.reset()
    return found


def test_only_the_calls_own_inputs_are_not_module_state():
    found = classified(Everything(), torch.ones(2, 3), torch.tensor(2.0))
    # item (s), item_1 (weight), item_2 (count), item_3 (plain): in the order of forward.
    assert found == {"item": False, "item_1": True, "item_2": True, "item_3": True}


def test_a_graph_without_dynamo_records_has_only_inputs_and_attributes():
    gm = torch.fx.symbolic_trace(Everything())
    kinds = {node.op: keep_input_items.is_module_state(node) for node in gm.graph.nodes if node.op != "output"}
    assert kinds["placeholder"] is False and kinds["get_attr"] is True and kinds["call_method"] is False


# A stand-in for upstream's folding module: fold_get_attr_item_calls asks the module global _get_actual_tensor.
FOLD_SOURCE = textwrap.dedent("""
    def _get_actual_tensor(origin, gm, sample_inputs, placeholder_index):
        return ("real tensor of", origin)

    def fold_get_attr_item_calls(gm, sample_inputs=None):
        found = []
        for node in gm:
            found.append(_get_actual_tensor(node, gm, sample_inputs, {}))
        return found
""")


@pytest.fixture
def stubs():
    fold = types.ModuleType(keep_input_items._FOLD_MODULE)
    exec(compile(FOLD_SOURCE, "fold.py", "exec"), fold.__dict__)
    backends = types.SimpleNamespace(fold_get_attr_item_calls=fold.fold_get_attr_item_calls)
    with testing.stub_modules({keep_input_items._FOLD_MODULE: fold, keep_input_items._BACKENDS_MODULE: backends}):
        yield fold


def fx_nodes():
    gm = torch.fx.symbolic_trace(Everything())
    return {node.op: node for node in gm.graph.nodes}


def test_apply_hides_the_calls_inputs_from_the_folding_and_undoes_exactly(stubs):
    original = stubs._get_actual_tensor
    nodes = fx_nodes()
    with testing.applied(keep_input_items, release="2.14.0") as ctx:
        assert [change.name for change in ctx.records] == ["_get_actual_tensor"]
        placeholder, attribute = nodes["placeholder"], nodes["get_attr"]
        assert stubs.fold_get_attr_item_calls([placeholder, attribute]) == [None, ("real tensor of", attribute)]
    assert stubs._get_actual_tensor is original
    assert stubs.fold_get_attr_item_calls([nodes["placeholder"]]) == [("real tensor of", nodes["placeholder"])]


def test_apply_refuses_a_folding_that_no_longer_asks_the_module_global(stubs):
    stubs.fold_get_attr_item_calls = lambda gm, sample_inputs=None: gm
    with pytest.raises(TargetChanged, match="no longer calls the module's _get_actual_tensor"):
        with testing.applied(keep_input_items, release="2.14.0"):
            pass

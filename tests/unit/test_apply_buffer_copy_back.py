"""Tests for trt_compat.patches.apply_buffer_copy_back: CPU only, no torch_tensorrt needed.

The module 2.14's ``dynamo.compile`` hands ``hide_copyback_outputs``: the buffer read by a ``get_attr`` (inlined after
compile), the block computing the output and the buffer's new value, the new value a trailing graph output. After the
patch's rewrite the module writes that value into the buffer after each call, as the eager model does.
"""

import types

import torch
from torch.fx import GraphModule
from trt_compat.patches import apply_buffer_copy_back as patch
from trt_compat.patches.apply_buffer_copy_back import copy_back_in_place

from trt_compat import testing

aten = torch.ops.aten


def compiled_counter():
    """What 2.14 returns for ``count.add_(1); return x * count``: new count as a trailing (copy-back) output."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    count = graph.get_attr("count")
    new = graph.call_function(aten.add.Tensor, (count, 1))
    graph.output((graph.call_function(aten.mul.Tensor, (x, new)), new))
    root = torch.nn.Module()
    root.register_buffer("count", torch.zeros(()))
    gm = GraphModule(root, graph)
    gm.meta["_copyback_mutation_buffers"] = ["count"]
    return gm


def test_the_module_writes_the_copy_back_value_into_its_buffer():
    gm = compiled_counter()
    copy_back_in_place(gm, ["count"], 1)
    x = torch.arange(3.0)
    outputs = [gm(x)[0] for _ in range(3)]
    assert [o.tolist() for o in outputs] == [(x * n).tolist() for n in (1, 2, 3)]
    assert float(gm.count) == 3.0


def test_nothing_changes_when_the_record_does_not_match_the_outputs():
    for buffers, hidden in ((["count"], 0), (["count", "other"], 1), (["missing"], 1)):
        gm = compiled_counter()
        code = gm.code
        copy_back_in_place(gm, buffers, hidden)
        assert gm.code == code, (buffers, hidden)


def test_apply_writes_back_before_upstream_hides_the_values():
    compiler = types.ModuleType("torch_tensorrt.dynamo._compiler")
    exec(
        "def hide_copyback_outputs(gm, num_hidden):\n"
        "    hide_copyback_outputs.seen.append([n.target for n in gm.graph.nodes])\n"
        "hide_copyback_outputs.seen = []\n"
        "def compile(gm):\n"
        "    hide_copyback_outputs(gm, len(gm.meta['_copyback_mutation_buffers']))\n"
        "    return gm\n",
        vars(compiler),
    )
    with testing.stub_modules({"torch_tensorrt.dynamo._compiler": compiler}):
        with testing.applied(patch, release="2.14.0"):
            gm = compiler.compile(compiled_counter())
            assert aten.copy_.default in compiler.hide_copyback_outputs.__wrapped__.seen[0]
            gm(torch.ones(2))
            assert float(gm.count) == 1.0

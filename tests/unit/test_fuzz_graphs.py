"""Property-based fuzzing of trt_compat's graph functions on random FX graphs.

Graphs are drawn by hypothesis from views, reshapes, max pooling with indices (used, unused or dropped),
adaptive max pooling (2-D, and 1-D on flattened views), getitems and elementwise ops, with random operands (so
random user orders) and a unique tag, stack trace and module stack in every node's metadata. Properties:

* after ``replace_views_with_reshapes`` and ``decompose_tuple_pooling`` (in a random order) every surviving
  node still carries its own tag, no two nodes share a metadata dict or module stack, every new node carries
  the provenance of a node it replaced, every ``meta['val']`` agrees with a fresh fake propagation
  (``trt_compat.audit.mismatches``) and the eager outputs are bit-identical;
* after splitting the raw graph at random points (``torch.fx.passes.split_module``) and damaging the
  submodules' input metadata the way #3185 does (a stale tuple val, no val, None), ``repair_submodule_inputs``
  leaves no input upstream would reject, each input's val describes the tensor that really flows in, surviving
  inputs keep their tags, and the split module computes the same outputs.

The number of examples run is printed at the end of the module and recorded in RELIABILITY.md;
TRT_COMPAT_FUZZ_EXAMPLES scales it (default 60 decomposition and 120 partition examples).
"""

import contextlib
import math
import operator
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from torch.fx.passes.split_module import split_module
from trt_compat.patches.tuple_partition_inputs import boundary_problems, remember_partition, repair_submodule_inputs
from trt_compat.patches.tuple_pooling import decompose_tuple_pooling
from trt_compat.patches.view_to_reshape_metadata import replace_views_with_reshapes

from trt_compat import audit

aten = torch.ops.aten
# Sized for about a minute per run on a shared 2-core machine; TRT_COMPAT_FUZZ_EXAMPLES=1000 for a long soak.
EXAMPLES = int(os.environ.get("TRT_COMPAT_FUZZ_EXAMPLES", "60"))
# derandomize: CI runs the same examples every time, so a failure always reproduces.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RUNS = {"decomposition": 0, "partition": 0}


@pytest.fixture(scope="module", autouse=True)
def report_examples(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\ntrt_compat fuzz: examples run: {RUNS}")


class RandomGraph:
    """A random graph under construction; each op's value is computed on meta tensors as it is added."""

    def __init__(self, draw):
        self.draw = draw
        self.graph = torch.fx.Graph()
        n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
        h, w = draw(st.integers(2, 7)), draw(st.integers(2, 7))
        self.input = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(draw(st.integers(0, 999))))
        x = self.graph.placeholder("x")
        self.meta = {x: torch.empty(n, c, h, w, device="meta")}
        self.floats = [x]
        self.ints = []
        self.dead = []  # getitems deliberately left without users

    def emit(self, target, *args):
        node = self.graph.call_function(target, args)
        self.meta[node] = target(*torch.fx.node.map_arg(args, self.meta.__getitem__))
        return node

    def pick(self, nodes):
        return self.draw(st.sampled_from(nodes))

    def shape(self, node):
        return tuple(self.meta[node].shape)

    def step(self):
        kind = self.draw(
            st.sampled_from(
                ["view", "view", "reshape", "unary", "binary", "max_pool", "max_pool", "adaptive", "adaptive_1d"]
            )
        )
        getattr(self, f"add_{kind}")()

    def add_view(self, target=aten.view.default):
        source = self.pick(self.floats)
        shape = self.shape(source)
        numel = math.prod(shape)
        choices = [[numel], [shape[0], numel // shape[0]]]
        if len(shape) == 4:
            choices.append([shape[0], shape[1], shape[2] * shape[3]])
        choices += [list(self.shape(n)) for n in self.floats if math.prod(self.shape(n)) == numel]
        self.floats.append(self.emit(target, source, self.draw(st.sampled_from(choices))))

    def add_reshape(self):
        self.add_view(aten.reshape.default)

    def add_unary(self):
        op = self.draw(st.sampled_from(["relu", "neg", "mul"]))
        source = self.pick(self.floats)
        if op == "mul":
            self.floats.append(self.emit(aten.mul.Tensor, source, self.draw(st.sampled_from([0.5, 2.0, -3.0]))))
        else:
            self.floats.append(self.emit(getattr(aten, op).default, source))

    def add_binary(self):
        first = self.pick(self.floats)
        partners = [n for n in self.floats if self.shape(n) == self.shape(first)]
        self.floats.append(self.emit(aten.add.Tensor, first, self.pick(partners)))

    def pooled(self, node):
        """getitems of a tuple pooling node: each of values / indices used, unused, or not taken at all."""
        for index in (0, 1):
            use = self.draw(st.sampled_from(["used", "used", "unused", "absent"]))
            if use == "absent":
                continue
            item = self.graph.call_function(operator.getitem, (node, index))
            self.meta[item] = self.meta[node][index]
            if use == "unused":
                self.dead.append(item)
            elif index == 0:
                self.floats.append(item)
            else:
                self.ints.append(self.emit(aten.add.Tensor, item, 1) if self.draw(st.booleans()) else item)

    def add_max_pool(self):
        four_d = [n for n in self.floats if len(self.shape(n)) == 4]
        if not four_d:
            return self.add_view()
        source = self.pick(four_d)
        h, w = self.shape(source)[2:]
        k = self.draw(st.integers(1, min(h, w, 3)))
        stride = self.draw(st.integers(1, 3))
        padding = self.draw(st.integers(0, k // 2))
        ceil = self.draw(st.booleans())
        full = (source, [k, k], [stride, stride], [padding, padding], [1, 1], ceil)
        args = full[: self.draw(st.sampled_from([2, 3, 4, 6]))]
        self.pooled(self.emit(aten.max_pool2d_with_indices.default, *args))

    def add_adaptive(self):
        four_d = [n for n in self.floats if len(self.shape(n)) == 4]
        if not four_d:
            return self.add_view()
        source = self.pick(four_d)
        h, w = self.shape(source)[2:]
        size = [self.draw(st.integers(1, h)), self.draw(st.integers(1, w))]
        self.pooled(self.emit(aten.adaptive_max_pool2d.default, source, size))

    def add_adaptive_1d(self):
        three_d = [n for n in self.floats if len(self.shape(n)) == 3]
        if not three_d:
            return self.add_view()
        source = self.pick(three_d)
        self.pooled(
            self.emit(aten.adaptive_max_pool1d.default, source, [self.draw(st.integers(1, self.shape(source)[2]))])
        )

    def finish(self):
        outputs = [n for n in self.floats + self.ints if not n.users and n.op != "placeholder"]
        self.graph.output(tuple(outputs or [self.emit(aten.relu.default, self.floats[-1])]))
        gm = torch.fx.GraphModule(torch.nn.Module(), self.graph)
        FakeTensorProp(gm, FakeTensorMode()).propagate(self.input)
        for i, node in enumerate(gm.graph.nodes):
            node.meta.update(tag=f"tag-{i}", stack_trace=f"trace-{i}", nn_module_stack={f"m{i}": (f"m{i}", "M")})
        return gm


@st.composite
def random_graphs(draw):
    builder = RandomGraph(draw)
    for _ in range(draw(st.integers(1, 10))):
        builder.step()
    return builder.finish(), builder.input


def eager(gm, x):
    with torch.no_grad():
        return [t.clone() for t in gm(x)]


def assert_same_outputs(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape and torch.equal(g, e)


@FUZZ
@given(random_graphs(), st.booleans())
def test_graph_passes_keep_metadata_and_values(graph_and_input, views_first):
    gm, x = graph_and_input
    expected = eager(gm, x)
    before = {node: node.meta["tag"] for node in gm.graph.nodes}
    passes = [replace_views_with_reshapes, decompose_tuple_pooling]
    for graph_pass in passes if views_first else passes[::-1]:
        assert graph_pass(gm) is gm
    nodes = list(gm.graph.nodes)
    for node in nodes:
        if node in before:
            assert node.meta["tag"] == before[node], node
        else:  # new nodes carry the provenance of a node they replaced
            assert node.meta.get("tag") in set(before.values()) - {before[n] for n in nodes if n in before}, node
    assert len({id(n.meta) for n in nodes}) == len(nodes), "two nodes share one meta dict"
    stacks = [n.meta["nn_module_stack"] for n in nodes if "nn_module_stack" in n.meta]
    assert len({id(s) for s in stacks}) == len(stacks), "two nodes share one nn_module_stack"
    assert all(n.target != aten.view.default for n in nodes)
    assert audit.mismatches(gm) == []
    assert_same_outputs(eager(gm, x), expected)
    RUNS["decomposition"] += 1


def damage(draw, placeholder):
    """What #3185 leaves on partition inputs: a stale (values, indices) tuple, no val at all, or None."""
    val = placeholder.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return False
    how = draw(st.sampled_from(["keep", "keep", "tuple", "missing", "none"]))
    if how == "tuple":
        placeholder.meta["val"] = (val, val.new_empty(val.shape, dtype=torch.int64))
    elif how == "missing":
        del placeholder.meta["val"]
        placeholder.meta.pop("tensor_meta", None)
    elif how == "none":
        placeholder.meta["val"] = None
    return how != "keep"


def real_block_inputs(parent, x):
    seen = {}
    handles = [
        child.register_forward_pre_hook(lambda _m, args, name=name: seen.__setitem__(name, args))
        for name, child in parent.named_children()
    ]
    try:
        with torch.no_grad():
            out = [t.clone() for t in parent(x)]
    finally:
        for handle in handles:
            handle.remove()
    return seen, out


@settings(FUZZ, max_examples=2 * EXAMPLES)
@given(random_graphs(), st.data())
def test_partition_repair_on_random_split_points(graph_and_input, data):
    gm, x = graph_and_input
    expected = eager(gm, x)
    # Partitioners see lowered graphs, which Torch-TensorRT has cleaned of dead code. torch 2.4's split_module
    # turns a block holding only dead getitems into a submodule without an output node, whose code cannot
    # be regenerated at all.
    gm.graph.eliminate_dead_code()
    gm.recompile()
    compute = [n for n in gm.graph.nodes if n.op == "call_function"]
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(compute) - 1)), max_size=3)))
    block = {n: sum(i >= c for c in cuts) for i, n in enumerate(compute)}
    parent = split_module(gm, None, lambda node: block[node], keep_original_order=data.draw(st.booleans()))
    remember_partition(parent)
    children = {name: child for name, child in parent.named_children()}
    damaged = {}
    for name, child in children.items():
        for node in child.graph.nodes:
            if node.op == "placeholder":
                tag = node.meta.get("tag")
                if damage(data.draw, node):
                    damaged[(name, node.name)] = tag
    for child in children.values():
        repair_submodule_inputs(child)
        assert boundary_problems(child) == []
    inputs, out = real_block_inputs(parent, x)
    for name, child in children.items():
        placeholders = [n for n in child.graph.nodes if n.op == "placeholder"]
        assert len(placeholders) == len(inputs[name])
        for node, value in zip(placeholders, inputs[name]):
            val = node.meta["val"]
            assert tuple(val.shape) == tuple(value.shape) and val.dtype == value.dtype, (name, node)
            if (name, node.name) in damaged:
                assert node.meta.get("tag") == damaged[(name, node.name)], (name, node)
    assert_same_outputs(out, expected)
    RUNS["partition"] += 1

"""``python -m trt_compat demo``: trt_compat's three fixes on an embedded default model.

Needs only torch (CPU is enough). The model combines what trips Torch-TensorRT: a SqueezeNet-style
``MaxPool2d(3, 2, ceil_mode=True)``, a SegNet-style pool whose indices feed ``MaxUnpool2d``, and a head with
two views where the later view is consumed first (the order that misplaces metadata in upstream's
view_to_reshape). Each step prints what it found and checks it against eager PyTorch or fake-tensor
propagation; the exit status is 1 if any check fails.
"""

import sys
import warnings

import torch
from torch import nn


class DefaultModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.MaxPool2d(2, return_indices=True)
        self.up = nn.MaxUnpool2d(2)
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor):
        x = torch.relu(self.conv(self.pool(torch.relu(self.stem(x)))))
        pooled, indices = self.down(x)
        x = self.up(pooled, indices, output_size=x.shape)
        per_channel = x.view(x.shape[0], 8, -1)
        flat = x.view(x.shape[0], -1)
        return self.head(flat), per_channel.amax(-1)


def example_input() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def exported_graph() -> torch.fx.GraphModule:
    model = DefaultModel().eval()
    return torch.export.export(model, (example_input(),)).run_decompositions().module()


def _call_targets(gm: torch.fx.GraphModule):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def _vals_agree_with_propagation(gm: torch.fx.GraphModule) -> int:
    """How many call_function nodes carry a val that fake-tensor propagation does not reproduce."""
    from torch._guards import detect_fake_mode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    recorded = {n: n.meta.get("val") for n in gm.graph.nodes}
    placeholders = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder"]
    FakeTensorProp(gm, detect_fake_mode(placeholders)).propagate_dont_convert_inputs(*placeholders)
    wrong = 0
    for node, before in recorded.items():
        after = node.meta.get("val")
        node.meta["val"] = before
        if node.op == "call_function" and isinstance(after, torch.Tensor):
            if not isinstance(before, torch.Tensor) or before.shape != after.shape or before.dtype != after.dtype:
                wrong += 1
    return wrong


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def run_demo(as_json: bool = False) -> int:
    import trt_compat
    from trt_compat.patches.tuple_partition_inputs import boundary_problems, remember_partition, repair_submodule_inputs
    from trt_compat.patches.tuple_pooling import TUPLE_POOLING_OPS, decompose_tuple_pooling
    from trt_compat.patches.view_to_reshape_metadata import replace_views_with_reshapes

    # torch.export's own deprecation notices are not what this demonstration is about.
    warnings.filterwarnings("ignore", category=FutureWarning)
    checks = []
    print("== environment\n" + str(trt_compat.report()) + "\n")
    x = example_input()
    gm = exported_graph()
    expected = gm(x)

    print("== tuple_pooling: tuple-returning pooling nodes become single-output nodes")
    before = sum(t in TUPLE_POOLING_OPS for t in _call_targets(gm))
    decompose_tuple_pooling(gm)
    after = sum(t in TUPLE_POOLING_OPS for t in _call_targets(gm))
    identical = _same(gm(x), expected)
    print(f"   tuple-returning pooling nodes: {before} -> {after}; eager outputs bit-identical: {identical}")
    checks += [after == 0, identical]

    print("== view_to_reshape_metadata: views become reshapes in place, each keeping its own metadata")
    views = sum(t is torch.ops.aten.view.default for t in _call_targets(gm))
    replace_views_with_reshapes(gm)
    reshapes = sum(t is torch.ops.aten.reshape.default for t in _call_targets(gm))
    wrong = _vals_agree_with_propagation(gm)
    print(f"   view nodes: {views} -> reshape nodes: {reshapes}; nodes whose val disagrees with propagation: {wrong}")
    checks += [reshapes >= views > 0, wrong == 0]

    print("== tuple_partition_inputs: a stale (values, indices) val at a partition boundary")
    stale = exported_graph()
    pool = next(n for n in stale.graph.nodes if n.target is torch.ops.aten.max_pool2d_with_indices.default)
    values = next(iter(pool.users))
    # What Torch-TensorRT 2.2-2.4's max-pool fusion leaves behind: a single-output node sharing the
    # replaced node's metadata dict, whose val is still the (values, indices) tuple.
    with stale.graph.inserting_after(values):
        fused = stale.graph.call_function(torch.ops.aten.max_pool2d.default, pool.args, pool.kwargs)
    fused.meta = pool.meta
    values.replace_all_uses_with(fused)
    stale.graph.erase_node(values)
    stale.graph.erase_node(pool)
    stale.recompile()
    partitions, seen_fused = {}, False
    for node in stale.graph.nodes:
        partitions[node] = 1 if seen_fused else 0
        seen_fused = seen_fused or node is fused
    parent = torch.fx.passes.split_module.split_module(stale, None, lambda n: partitions[n])
    remember_partition(parent)
    block = parent.submod_1
    problems = boundary_problems(block)
    print(
        f"   block inputs upstream's construct_submodule_inputs would reject: {[p.name for p in problems]}"
        f" (val type {type(problems[0].meta['val']).__name__})"
        if problems
        else "   none"
    )
    for note in repair_submodule_inputs(block):
        print(f"   repaired: {note}")
    flowing = {}
    handle = block.register_forward_pre_hook(lambda _m, args: flowing.setdefault("args", args))
    parent(x)
    handle.remove()
    placeholders = [n for n in block.graph.nodes if n.op == "placeholder"]
    exact = all(
        isinstance(p.meta.get("val"), torch.Tensor)
        and p.meta["val"].shape == t.shape
        and p.meta["val"].dtype == t.dtype
        for p, t in zip(placeholders, flowing["args"])
    )
    print(f"   after repair every block input describes the tensor that really flows: {exact}")
    checks += [bool(problems), exact, not boundary_problems(block)]

    print("\nall checks passed" if all(checks) else "\nSOME CHECKS FAILED")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(run_demo())

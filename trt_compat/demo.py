"""``trt-compat demo``: trt_compat's graph transformations on an embedded model, with torch alone.

The model combines what trips Torch-TensorRT: a SqueezeNet-style ``MaxPool2d(3, 2, ceil_mode=True)``, a SegNet-style
pool whose indices feed ``MaxUnpool2d``, and a head with two views where the later view is consumed first. For
each of the three original fixes the demo says what goes wrong upstream (in words: Torch-TensorRT is not needed
here), runs trt_compat's transformation on a fresh export of the model, and checks the result against eager
PyTorch (bit for bit) and fake-tensor propagation. Exit status 1 if a check fails. ``--json`` prints the checks.
"""

import json
import operator
import sys
import warnings
from dataclasses import asdict, dataclass
from typing import List

with warnings.catch_warnings():
    # CPU wheels of torch without numpy say so at import; nothing here uses numpy.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
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
    torch.manual_seed(0)
    model = DefaultModel().eval()
    with warnings.catch_warnings():
        # torch.export's own deprecation notices are not what this demonstration is about.
        warnings.simplefilter("ignore", FutureWarning)
        # An empty decomposition table: the graph keeps the ops the model calls (max_unpool2d, view, linear).
        return torch.export.export(model, (example_input(),)).run_decompositions({}).module()


@dataclass
class Check:
    patch: str
    check: str
    ok: bool
    detail: str


def _count(gm: torch.fx.GraphModule, targets) -> int:
    return sum(node.op == "call_function" and node.target in targets for node in gm.graph.nodes)


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _disagreeing_vals(gm: torch.fx.GraphModule) -> int:
    """call_function nodes whose recorded val fake-tensor propagation does not reproduce (shape or dtype)."""
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


def _tuple_pooling(say) -> List[Check]:
    from trt_compat.patches.tuple_pooling import TUPLE_POOLING_OPS, decompose_tuple_pooling

    say("1. tuple_pooling: a max pool whose indices are used returns (values, indices); upstream leaves it a")
    say("   tuple-returning node, whose outputs cannot cross a TensorRT block boundary, and converts neither the")
    say("   indices nor max_unpool2d, so a SegNet-style model is cut into several engines.")
    gm, x = exported_graph(), example_input()
    expected = gm(x)
    before = _count(gm, TUPLE_POOLING_OPS)
    unpools = _count(gm, {torch.ops.aten.max_unpool2d.default})
    decompose_tuple_pooling(gm, "tensorrt")
    after = _count(gm, TUPLE_POOLING_OPS)
    identical = _same(gm(x), expected)
    say(
        f"   trt_compat: tuple-returning pool nodes {before} -> {after}; max_unpool2d nodes {unpools} -> "
        f"{_count(gm, {torch.ops.aten.max_unpool2d.default})} (indices and unpooling now in ops TensorRT converts)"
    )
    say(f"   outputs bit-identical to eager: {identical}")
    return [
        Check("tuple_pooling", "no tuple-returning pool left", after == 0, f"{before} -> {after}"),
        Check("tuple_pooling", "outputs bit-identical to eager", identical, ""),
    ]


def _view_to_reshape(say) -> List[Check]:
    from trt_compat.patches.view_to_reshape_metadata import replace_views_with_reshapes

    say("2. view_to_reshape_metadata: upstream's view_to_reshape pass (2.2-2.5) hands each new reshape the metadata")
    say("   of another view when a later view is consumed first, as the model's head does (#3221).")
    gm, x = exported_graph(), example_input()
    expected = gm(x)
    views = _count(gm, {torch.ops.aten.view.default})
    reshapes_before = _count(gm, {torch.ops.aten.reshape.default})
    replace_views_with_reshapes(gm)
    reshapes = _count(gm, {torch.ops.aten.reshape.default}) - reshapes_before
    wrong = _disagreeing_vals(gm)
    identical = _same(gm(x), expected)
    say(f"   trt_compat: {views} view nodes became {reshapes} reshape nodes in place (same nodes, same metadata);")
    say(
        f"   nodes whose meta['val'] fake propagation contradicts: {wrong}; outputs bit-identical to eager: {identical}"
    )
    return [
        Check("view_to_reshape_metadata", "every view retargeted", reshapes == views > 0, f"{views} -> {reshapes}"),
        Check("view_to_reshape_metadata", "metadata agrees with propagation", wrong == 0, f"{wrong} disagree"),
        Check("view_to_reshape_metadata", "outputs bit-identical to eager", identical, ""),
    ]


def _fused_pool(gm: torch.fx.GraphModule) -> torch.fx.Node:
    """The single-output max_pool2d of the pool whose indices are unused. torch 2.4's export still records it as
    max_pool2d_with_indices + getitem 0; there it is fused here as upstream's fusion does it (same arguments, the
    replaced node's metadata)."""
    for node in gm.graph.nodes:
        if node.target is torch.ops.aten.max_pool2d.default:
            return node
    for node in gm.graph.nodes:
        if node.target is torch.ops.aten.max_pool2d_with_indices.default and all(
            user.target is operator.getitem and user.args[1] == 0 for user in node.users
        ):
            with gm.graph.inserting_after(node):
                fused = gm.graph.call_function(torch.ops.aten.max_pool2d.default, node.args, node.kwargs)
            fused.meta = dict(node.meta)
            for user in list(node.users):
                user.replace_all_uses_with(fused)
                gm.graph.erase_node(user)
            gm.graph.erase_node(node)
            gm.recompile()
            return fused
    raise LookupError("the embedded model has no max pool whose indices are unused")


def _tuple_partition_inputs(say) -> List[Check]:
    from trt_compat.patches.tuple_partition_inputs import boundary_problems, remember_partition, repair_submodule_inputs

    say("3. tuple_partition_inputs: upstream's max-pool fusion (2.2-2.4) leaves the fused max_pool2d with the")
    say("   (values, indices) val of the node it replaced; when that pool ends a PyTorch block, the next TensorRT")
    say("   block's input is described by that tuple and construct_submodule_inputs aborts (#3185).")
    stale = exported_graph()
    fused = _fused_pool(stale)
    # What that fusion leaves on the single-output max_pool2d: the (values, indices) val of max_pool2d_with_indices.
    values = fused.meta["val"][0] if isinstance(fused.meta["val"], tuple) else fused.meta["val"]
    fused.meta["val"] = (values, values.new_empty(values.shape, dtype=torch.int64))
    partitions, seen_fused = {}, False
    for node in stale.graph.nodes:
        partitions[node] = 1 if seen_fused else 0
        seen_fused = seen_fused or node is fused
    parent = torch.fx.passes.split_module.split_module(stale, None, lambda n: partitions[n])
    remember_partition(parent)
    block = parent.submod_1
    problems = boundary_problems(block)
    names = ", ".join(f"{p.name} (meta['val'] is a {type(p.meta['val']).__name__})" for p in problems) or "none"
    say(f"   block inputs upstream would reject: {names}")
    for note in repair_submodule_inputs(block):
        say(f"   trt_compat: {note}")
    flowing = {}
    handle = block.register_forward_pre_hook(lambda _m, args: flowing.setdefault("args", args))
    parent(example_input())
    handle.remove()
    placeholders = [n for n in block.graph.nodes if n.op == "placeholder"]
    exact = all(
        isinstance(p.meta.get("val"), torch.Tensor)
        and p.meta["val"].shape == t.shape
        and p.meta["val"].dtype == t.dtype
        for p, t in zip(placeholders, flowing["args"])
    )
    say(f"   every block input now describes the tensor that really flows into it: {exact}")
    return [
        Check("tuple_partition_inputs", "stale tuple input found", bool(problems), names),
        Check("tuple_partition_inputs", "inputs describe the flowing tensors", exact, ""),
        Check("tuple_partition_inputs", "nothing left to reject", not boundary_problems(block), ""),
    ]


def run_demo(as_json: bool = False) -> int:
    import trt_compat

    lines: List[str] = []
    say = lines.append
    say(
        f"trt_compat {trt_compat.__version__} demo: its graph transformations on an embedded model, torch "
        f"{torch.__version__} only (Torch-TensorRT is not needed)."
    )
    say("")
    checks: List[Check] = []
    for step in (_tuple_pooling, _view_to_reshape, _tuple_partition_inputs):
        checks += step(say)
        say("")
    ok = all(check.ok for check in checks)
    say("all checks passed" if ok else "SOME CHECKS FAILED: " + ", ".join(c.check for c in checks if not c.ok))
    say("")
    say("== this environment (python -m trt_compat report)")
    say(str(trt_compat.report()))
    if as_json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_demo())

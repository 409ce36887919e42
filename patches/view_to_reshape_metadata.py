"""Keep each node's own metadata when Torch-TensorRT lowers ``aten.view`` to ``aten.reshape``.

Upstream defect pytorch/TensorRT#3221. The ``view_to_reshape`` lowering pass of Torch-TensorRT
2.3-2.5 snapshots the ``meta`` dicts of all ``aten.view.default`` nodes in graph order, rewrites
the graph with ``torch.fx.subgraph_rewriter.replace_pattern`` and then hands the snapshots to the
new ``aten.reshape.default`` nodes, again in graph order. ``replace_pattern`` inserts every
replacement right before the first user of its match, so whenever a later view is consumed before
an earlier one the new nodes come out in a different order and receive another node's metadata
(shape, dtype, stack trace). Torch-TensorRT 2.2.0 drops that metadata altogether.

Rewriting is unnecessary in the first place: ``aten.reshape.default`` takes exactly the arguments
of ``aten.view.default`` and produces the same value, so retargeting the existing nodes in place
keeps every node's identity, name, position, users and -- the point of this patch -- its own
``meta``.
"""

from typing import Callable, Optional

import torch

from trt_compat.patching import (
    Defect,
    NotApplicable,
    Patch,
    PatchContext,
    TargetChanged,
    lowering_pass,
    post_lowering_passes,
)
from trt_compat.probing import Probe, has_module

_VIEW = torch.ops.aten.view.default
_RESHAPE = torch.ops.aten.reshape.default


def replace_views_with_reshapes(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Retarget every ``aten.view.default`` call in ``gm`` to ``aten.reshape.default``, in place.

    Reshape is what upstream lowers to because, unlike view, it does not fail on inputs whose
    strides are incompatible with the requested shape; it accepts the same ``(input, shape)``
    arguments, so only the target needs to change. Touches the view nodes only (through the graph's
    node index where torch has one, 2.3+) and regenerates the code only when a node was changed.
    Returns ``gm`` so it can stand in for the upstream lowering pass.
    """
    views = _view_nodes(gm.graph)
    for node in views:
        # Assigning through Node.__setattr__ keeps the graph's find_nodes lookup table in sync.
        node.target = _RESHAPE
    if views:
        gm.recompile()
    return gm


def _view_nodes(graph: torch.fx.Graph) -> list:
    find_nodes = getattr(graph, "find_nodes", None)
    if find_nodes is not None:
        # Unsorted: the order does not matter for retargeting, and sorting would cost n log n.
        return find_nodes(op="call_function", target=_VIEW, sort=False)
    return [node for node in graph.nodes if node.op == "call_function" and node.target is _VIEW]


class ThreeViews(torch.nn.Module):
    """The reproducer: three views of one input, consumed in reverse order, so the last view's first user comes
    first and upstream's replacements come out in another order than the views they replace."""

    def forward(self, x: torch.Tensor):  # x: (2, 3, 4)
        a = x.view(6, 4)
        b = x.view(2, 12)
        c = x.view(24)
        return c + 1, b * 2, a - 1


def view_metadata_problems(gm: torch.fx.GraphModule) -> list:
    """Each view-like node whose ``meta['val']`` is missing or not the shape its own arguments give."""
    view_like = {_VIEW, _RESHAPE, getattr(getattr(torch.ops.aten, "_reshape_copy", None), "default", None)}
    problems = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in view_like:
            continue
        wanted = tuple(torch.empty(node.args[0].meta["val"].shape, device="meta").reshape(node.args[1]).shape)
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            problems.append(f"{node.name} has no meta['val'] (its arguments give {wanted})")
        elif tuple(val.shape) != wanted:
            problems.append(f"{node.name}: meta['val'] says {tuple(val.shape)}, its arguments give {wanted}")
    return problems


def check_view_metadata(probe: Probe) -> Optional[str]:
    if not has_module("torch_tensorrt.dynamo.lowering.passes.view_to_reshape"):
        raise NotApplicable("this release has no view_to_reshape lowering pass")
    gm = probe.export_and_lower(ThreeViews(), torch.randn(2, 3, 4))
    return "; ".join(view_metadata_problems(gm)) or None


def _upstream_view_to_reshape(gm: torch.fx.GraphModule) -> None:
    """A stand-in for upstream's pass (2.3-2.5): the views' ``meta`` dicts collected in graph order, the views
    replaced with ``replace_pattern``, the dicts handed to the new reshapes in their graph order."""

    def view(x: torch.Tensor, shape: list) -> torch.Tensor:
        return _VIEW(x, shape)

    def reshape(x: torch.Tensor, shape: list) -> torch.Tensor:
        return _RESHAPE(x, shape)

    collected = [node.meta for node in _view_nodes(gm.graph)]
    torch.fx.subgraph_rewriter.replace_pattern(gm, view, reshape)
    reshapes = [node for node in gm.graph.nodes if node.op == "call_function" and node.target is _RESHAPE]
    for node, meta in zip(reshapes, collected):
        node.meta = meta


def demonstrate(say: Callable[[str], None]) -> list:
    """``trt-compat demo``: the embedded model's head, two views of which the later one is consumed first."""
    from trt_compat.demo import WITH, WITHOUT, Check, count, disagreeing_vals, example_input, exported_graph, identical

    say(
        "upstream: the view_to_reshape pass of 2.3-2.5 hands the views' metadata to the new reshapes in graph order "
        "after replace_pattern has moved them: when a later view is consumed first, as in the model's head, a "
        "reshape describes another view's tensor (#3221), which later passes and the partitioner trust."
    )
    upstream = exported_graph()
    _upstream_view_to_reshape(upstream)
    upstream_wrong = disagreeing_vals(upstream)
    say(f"without trt_compat (a stand-in for upstream's pass): nodes whose meta['val'] is wrong: {upstream_wrong}")
    gm, x = exported_graph(), example_input()
    expected = gm(x)
    views = count(gm, {_VIEW})
    replace_views_with_reshapes(gm)
    reshapes = count(gm, {_RESHAPE})
    wrong = disagreeing_vals(gm)
    exact = identical(gm(x), expected)
    say(
        f"with trt_compat: {views} views retargeted to reshape in place, nodes whose meta['val'] is wrong: {wrong}; "
        f"outputs bit-identical to eager: {exact}"
    )
    return [
        Check(PATCH.name, WITHOUT, "upstream's pass gives a reshape another view's metadata", upstream_wrong > 0),
        Check(PATCH.name, WITH, "every view retargeted", reshapes == views > 0, f"{views} -> {reshapes}"),
        Check(PATCH.name, WITH, "metadata agrees with propagation", wrong == 0, f"{wrong} disagree"),
        Check(PATCH.name, WITH, "outputs bit-identical to eager", exact),
    ]


PATCH = Patch(
    name="view_to_reshape_metadata",
    title="view_to_reshape keeps each node's own metadata",
    issue="https://github.com/pytorch/TensorRT/issues/3221",
    first_affected="2.2.0",
    fixed_in="2.6.0",
    why=(
        "Upstream's view_to_reshape pass hands the collected view metadata back by graph order after "
        "replace_pattern has moved the replacements (2.3-2.5), or drops it (2.2.0). 2.6 fixed the pass and "
        "2.7 removed it."
    ),
    defects=(
        Defect(
            "view_metadata",
            "#3221 view_to_reshape puts view metadata on the wrong node (or drops it)",
            check_view_metadata,
        ),
    ),
)


def apply(ctx: PatchContext) -> None:
    manager = post_lowering_passes(ctx)
    upstream = ctx.find_pass(manager, "view_to_reshape")
    if upstream is None:
        raise TargetChanged("the post-lowering pass list has no view_to_reshape pass")
    ctx.replace_pass(manager, upstream, lowering_pass(replace_views_with_reshapes))

"""Split tuple-returning max pooling nodes into single-output nodes before partitioning.

Upstream problem (pytorch/TensorRT#3185): Torch-TensorRT partitions an ATen FX graph into
TensorRT and PyTorch blocks, and whatever crosses a block boundary must be one tensor: a tuple
output can never cross. ``aten.max_pool{1,2,3}d_with_indices`` and ``aten.adaptive_max_pool{1,2,3}d``
return ``(values, indices)``. Upstream only rewrites ``max_poolNd_with_indices`` and only when the
indices are unused (and on 2.2-2.4 leaves the fused node with the old node's tuple ``meta['val']``),
so a model that uses the indices, or any adaptive max pool, can put a tuple on a boundary and fail
to compile.

``decompose_tuple_pooling`` rewrites every such node, indices used or not, into single-output
nodes:

* values of ``max_poolNd_with_indices`` become ``aten.max_poolNd`` (TensorRT has converters);
* values of ``adaptive_max_poolNd`` (no converter on any release) become reshape/slice + ``amax``
  (+ ``cat``) along one spatial dim at a time;
* indices, only where used, become ``trt_compat::max_pool_indices`` /
  ``trt_compat::adaptive_max_pool_indices``, custom ops that return ATen's own indices and so
  simply run in a PyTorch block.
"""
from __future__ import annotations

import copy
import logging
import operator
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensor

from trt_compat._patching import Patch, PatchContext, lowering_pass, post_lowering_passes

logger = logging.getLogger(__name__)

aten = torch.ops.aten

OPS_NAMESPACE = "trt_compat"
MAX_POOL_INDICES_SCHEMA = (
    "max_pool_indices(Tensor self, int[] kernel_size, int[] stride, int[] padding, "
    "int[] dilation, bool ceil_mode) -> Tensor"
)
ADAPTIVE_MAX_POOL_INDICES_SCHEMA = "adaptive_max_pool_indices(Tensor self, int[] output_size) -> Tensor"

_MAX_POOL_WITH_INDICES = {
    1: aten.max_pool1d_with_indices.default,
    2: aten.max_pool2d_with_indices.default,
    3: aten.max_pool3d_with_indices.default,
}
_MAX_POOL = {1: aten.max_pool1d.default, 2: aten.max_pool2d.default, 3: aten.max_pool3d.default}
_ADAPTIVE_MAX_POOL = {
    1: aten.adaptive_max_pool1d.default,
    2: aten.adaptive_max_pool2d.default,
    3: aten.adaptive_max_pool3d.default,
}

# Tuple-returning pooling op -> number of spatial dims it pools over.
MAX_POOL_WITH_INDICES_OPS = {op: nd for nd, op in _MAX_POOL_WITH_INDICES.items()}
ADAPTIVE_MAX_POOL_OPS = {op: nd for nd, op in _ADAPTIVE_MAX_POOL.items()}
TUPLE_POOLING_OPS = frozenset(MAX_POOL_WITH_INDICES_OPS) | frozenset(ADAPTIVE_MAX_POOL_OPS)

_MAX_POOL_PARAMS = ("self", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
_MAX_POOL_DEFAULTS = {"stride": [], "padding": [0], "dilation": [1], "ceil_mode": False}
_ADAPTIVE_PARAMS = ("self", "output_size")

# Keys whose value describes the old node's (tuple) output; every other key is provenance that the
# replacement nodes inherit.
_OUTPUT_META_KEYS = frozenset({"val", "tensor_meta", "example_value", "unbacked_bindings"})


def _pooling_op(ops: Dict[int, Any], spatial_dims: int) -> Any:
    if spatial_dims not in ops:
        raise ValueError(f"pooling over {spatial_dims} spatial dims is not supported (expected 1, 2 or 3)")
    return ops[spatial_dims]


# The same functions serve as eager and fake kernels: ATen's pooling ops have their own meta
# kernels, so on fake/meta inputs these compute exactly ATen's output shape, dtype and strides.
def _max_pool_indices_kernel(self, kernel_size, stride, padding, dilation, ceil_mode):
    op = _pooling_op(_MAX_POOL_WITH_INDICES, len(kernel_size))
    return op(self, kernel_size, stride, padding, dilation, ceil_mode)[1]


def _adaptive_max_pool_indices_kernel(self, output_size):
    return _pooling_op(_ADAPTIVE_MAX_POOL, len(output_size))(self, output_size)[1]


def _op_is_defined(name: str) -> bool:
    try:
        getattr(getattr(torch.ops, OPS_NAMESPACE), name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _register_ops() -> Optional[torch.library.Library]:
    """Define the indices ops and return the Library handle that keeps them registered.

    Returns None when they already exist (another import of this file under a different module
    name registered them, and its handle keeps them alive).
    """
    if _op_is_defined("max_pool_indices"):
        return None
    # FRAGMENT, not DEF: torch allows one DEF library per namespace, and other patches may add ops here.
    lib = torch.library.Library(OPS_NAMESPACE, "FRAGMENT")
    # register_fake appeared in torch 2.4; impl_abstract is its older name (and is gone in newer
    # releases).
    register_fake = getattr(torch.library, "register_fake", None) or torch.library.impl_abstract
    for schema, kernel in (
        (MAX_POOL_INDICES_SCHEMA, _max_pool_indices_kernel),
        (ADAPTIVE_MAX_POOL_INDICES_SCHEMA, _adaptive_max_pool_indices_kernel),
    ):
        name = schema.split("(", 1)[0]
        lib.define(schema)
        # One kernel for every backend: the ATen op it calls does the device dispatch.
        lib.impl(name, kernel, "CompositeExplicitAutograd")
        register_fake(f"{OPS_NAMESPACE}::{name}", kernel, lib=lib)
    return lib


# Dropping the Library handle unregisters the ops. importlib.reload re-runs this file in the same
# module namespace, so the existing handle is kept rather than defining the namespace twice, which
# torch rejects.
if "_LIBRARY" not in globals():
    _LIBRARY = _register_ops()

MAX_POOL_INDICES = torch.ops.trt_compat.max_pool_indices.default
ADAPTIVE_MAX_POOL_INDICES = torch.ops.trt_compat.adaptive_max_pool_indices.default


def adaptive_pool_bins(in_size: int, out_size: int) -> List[Tuple[int, int]]:
    """Half-open ``[start, end)`` ranges of the adaptive pooling bins along one dim.

    Bin ``i`` covers ``[floor(i*I/O), ceil((i+1)*I/O))``, the bins ATen uses; bins may overlap
    when ``I`` is not a multiple of ``O``.
    """
    return [((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)) for i in range(out_size)]


def is_tuple_pooling_node(node: torch.fx.Node) -> bool:
    """Whether ``node`` calls one of the max pooling ops that return ``(values, indices)``."""
    return node.op == "call_function" and node.target in TUPLE_POOLING_OPS


def _bind_args(
    node: torch.fx.Node, names: Sequence[str], defaults: Dict[str, Any]
) -> Optional[Dict[str, Any]]:
    if len(node.args) > len(names) or not set(node.kwargs) <= set(names):
        return None
    bound = dict(zip(names, node.args))
    if set(bound) & set(node.kwargs):
        return None
    bound.update(node.kwargs)
    for key, value in defaults.items():
        bound.setdefault(key, value)
    return bound if all(name in bound for name in names) else None


def _per_spatial_dim(value: Any, spatial_dims: int) -> Optional[List[int]]:
    """Expand an int or one-element list to one int per spatial dim, as ATen does for int[N] args.

    The indices ops take the number of spatial dims from the list length, so it must be explicit.
    """
    values = [value] if isinstance(value, int) else value
    if not isinstance(values, (list, tuple)):
        return None
    values = list(values)
    if len(values) == 1:
        values = values * spatial_dims
    if len(values) != spatial_dims or not all(type(v) is int for v in values):
        return None
    return values


def _getitem_users(node: torch.fx.Node) -> Optional[Tuple[List[torch.fx.Node], List[torch.fx.Node]]]:
    """The ``getitem(node, 0)`` and ``getitem(node, 1)`` users, or None if any user is something else."""
    by_index: Tuple[List[torch.fx.Node], List[torch.fx.Node]] = ([], [])
    for user in node.users:
        if not (
            user.op == "call_function"
            and user.target is operator.getitem
            and len(user.args) == 2
            and not user.kwargs
            and user.args[0] is node
            and type(user.args[1]) is int
            and -2 <= user.args[1] <= 1
        ):
            return None
        by_index[user.args[1] % 2].append(user)
    return by_index


def _inherited_meta(source: torch.fx.Node) -> Dict[str, Any]:
    """A fresh meta dict with ``source``'s provenance but not its output description.

    Container values are copied too, so a later pass editing one node's ``nn_module_stack`` (say)
    cannot change another node's.
    """
    return {
        key: copy.copy(value) if isinstance(value, (dict, list)) else value
        for key, value in source.meta.items()
        if key not in _OUTPUT_META_KEYS
    }


def _fake_run(target: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[torch.Tensor]:
    """``target`` applied to the fake ``meta['val']`` of the node arguments, or None if they have none."""
    vals: List[Any] = []

    def to_val(arg: torch.fx.Node) -> Any:
        vals.append(arg.meta.get("val"))
        return vals[-1]

    fake_args, fake_kwargs = torch.fx.node.map_arg((args, kwargs), to_val)
    if not vals or not all(isinstance(val, FakeTensor) for val in vals):
        return None
    try:
        with vals[0].fake_mode:
            result = target(*fake_args, **fake_kwargs)
    except Exception:  # a missing val is allowed; failing the rewrite because of one is not
        logger.debug("could not compute meta['val'] for a %s node", target, exc_info=True)
        return None
    return result if isinstance(result, torch.Tensor) else None


def _emit(
    graph: torch.fx.Graph,
    target: Any,
    args: Tuple[Any, ...],
    source: torch.fx.Node,
    val: Optional[torch.Tensor] = None,
    kwargs: Optional[Dict[str, Any]] = None,
) -> torch.fx.Node:
    """Insert a ``call_function`` node with ``source``'s provenance and a single-tensor ``meta['val']``.

    ``val`` defaults to running ``target`` on the inputs' fake values; with no such values the node
    gets no val at all, since a wrong one would mislead later passes more than a missing one.
    """
    kwargs = dict(kwargs or {})
    node = graph.call_function(target, args, kwargs)
    node.meta = _inherited_meta(source)
    if val is None:
        val = _fake_run(target, args, kwargs)
    if val is not None:
        node.meta["val"] = val
    return node


def _emit_adaptive_max(
    graph: torch.fx.Graph,
    source: torch.fx.Node,
    x: torch.fx.Node,
    shape: Sequence[Any],
    output_size: Sequence[int],
) -> torch.fx.Node:
    """Insert converter-friendly nodes computing the values of adaptive max pooling of ``x``.

    Adaptive bins are the product of per-dim 1-D bins and max is separable, so the spatial dims are
    reduced one at a time. ``amax`` gives the same values as ATen's kernel: a bin holding a NaN is
    NaN, and +-inf compare as ordinary numbers (an all ``-inf`` bin is ``-inf``). Only the sign of a
    zero may differ where a bin holds both ``0.0`` and ``-0.0``.
    """
    shape = list(shape)
    values = x
    first_spatial = len(shape) - len(output_size)
    for dim, out_size in enumerate(output_size, start=first_spatial):
        in_size = shape[dim]
        if in_size == out_size:
            continue
        if out_size > 1 and in_size % out_size == 0 and all(type(size) is int for size in shape):
            # Equal, disjoint bins: view the dim as (bins, bin size) and reduce the inner axis.
            split = shape[:dim] + [out_size, in_size // out_size] + shape[dim + 1 :]
            values = _emit(graph, aten.reshape.default, (values, split), source)
            values = _emit(graph, aten.amax.default, (values, [dim + 1]), source)
        else:
            # Uneven or overlapping bins (or a symbolic size elsewhere, which a reshape would bake
            # in): reduce each bin's slice separately. A single bin is the whole dim.
            bins = []
            for start, end in adaptive_pool_bins(in_size, out_size):
                window = values
                if (start, end) != (0, in_size):
                    window = _emit(graph, aten.slice.Tensor, (values, dim, start, end), source)
                bins.append(_emit(graph, aten.amax.default, (window, [dim], True), source))
            values = bins[0] if len(bins) == 1 else _emit(graph, aten.cat.default, (bins, dim), source)
        shape[dim] = out_size
    if values is x:
        # Output size equals input size: the values are the input, but must stay a new tensor rather
        # than an alias of it.
        values = _emit(graph, aten.clone.default, (x,), source)
    return values


class _Rewrite(NamedTuple):
    """How to replace one pooling node: a values builder plus the indices op and its arguments."""

    emit_values: Optional[Callable[[torch.fx.Graph], torch.fx.Node]]
    indices_op: Any
    indices_args: Tuple[Any, ...]


def _plan_max_pool(node: torch.fx.Node, values_val: Optional[torch.Tensor]) -> Optional[_Rewrite]:
    spatial_dims = MAX_POOL_WITH_INDICES_OPS[node.target]
    bound = _bind_args(node, _MAX_POOL_PARAMS, _MAX_POOL_DEFAULTS)
    if bound is None or not isinstance(bound["self"], torch.fx.Node) or type(bound["ceil_mode"]) is not bool:
        logger.debug("leaving %s alone: unexpected arguments %s %s", node.name, node.args, node.kwargs)
        return None
    stride = bound["stride"]
    if isinstance(stride, (list, tuple)) and len(stride) == 0:
        stride = bound["kernel_size"]  # ATen's meaning of an empty stride
    per_dim = [
        _per_spatial_dim(value, spatial_dims)
        for value in (bound["kernel_size"], stride, bound["padding"], bound["dilation"])
    ]
    if any(value is None for value in per_dim):
        logger.debug("leaving %s alone: pooling parameters are not constant int lists", node.name)
        return None

    def emit_values(graph: torch.fx.Graph) -> torch.fx.Node:
        return _emit(graph, _MAX_POOL[spatial_dims], node.args, node, values_val, node.kwargs)

    return _Rewrite(emit_values, MAX_POOL_INDICES, (bound["self"], *per_dim, bound["ceil_mode"]))


def _plan_adaptive_max_pool(node: torch.fx.Node, values_used: bool) -> Optional[_Rewrite]:
    spatial_dims = ADAPTIVE_MAX_POOL_OPS[node.target]
    bound = _bind_args(node, _ADAPTIVE_PARAMS, {})
    output_size = None if bound is None else _per_spatial_dim(bound["output_size"], spatial_dims)
    if output_size is None or min(output_size) < 1 or not isinstance(bound["self"], torch.fx.Node):
        logger.debug("leaving %s alone: unexpected arguments %s %s", node.name, node.args, node.kwargs)
        return None
    x = bound["self"]
    emit_values = None
    if values_used:
        # The bins depend on the input's spatial sizes, which only its meta['val'] can tell.
        val = x.meta.get("val")
        if not (
            isinstance(val, torch.Tensor)
            and val.dim() in (spatial_dims + 1, spatial_dims + 2)
            and all(type(size) is int and size >= 1 for size in val.shape[-spatial_dims:])
        ):
            logger.debug("leaving %s alone: its input has no static spatial sizes in meta['val']", node.name)
            return None

        def emit_values(graph: torch.fx.Graph) -> torch.fx.Node:
            # The decomposition's vals come from running its own ops rather than from the old tuple
            # val: they must match what fake propagation of the new nodes gives, strides included.
            return _emit_adaptive_max(graph, node, x, val.shape, output_size)

    return _Rewrite(emit_values, ADAPTIVE_MAX_POOL_INDICES, (x, output_size))


def _tuple_val(node: torch.fx.Node) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)) and len(val) == 2 and all(isinstance(t, torch.Tensor) for t in val):
        return val[0], val[1]
    return None


def _split_pooling_node(graph: torch.fx.Graph, node: torch.fx.Node) -> bool:
    """Replace one tuple pooling node by single-output nodes; False if it had to be left alone."""
    users = _getitem_users(node)
    if users is None:
        logger.debug("leaving %s alone: it has users other than getitem with a constant index", node.name)
        return False
    # A getitem nobody reads is dead code and needs no replacement.
    values_used, indices_used = (any(getitem.users for getitem in getitems) for getitems in users)
    # Without a (values, indices) val, e.g. a stale single-tensor one, vals are recomputed.
    values_val, indices_val = _tuple_val(node) or (None, None)
    if node.target in MAX_POOL_WITH_INDICES_OPS:
        rewrite = _plan_max_pool(node, values_val)
    else:
        rewrite = _plan_adaptive_max_pool(node, values_used)
    if rewrite is None:
        return False

    with graph.inserting_before(node):
        values = rewrite.emit_values(graph) if values_used else None
        indices = None
        if indices_used:
            indices = _emit(graph, rewrite.indices_op, rewrite.indices_args, node, indices_val)
    for getitems, replacement in zip(users, (values, indices)):
        for getitem in getitems:
            if getitem.users:
                getitem.replace_all_uses_with(replacement)
            graph.erase_node(getitem)
    graph.erase_node(node)
    return True


def decompose_tuple_pooling(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Rewrite every tuple-returning max pooling node of ``gm`` into single-output nodes, in place.

    Nodes with a user other than ``getitem(node, 0|1)`` are left alone (logged at debug level), as
    are adaptive pools whose input spatial sizes are not static. ``gm`` is recompiled only if
    something changed.
    """
    changed = False
    for node in list(gm.graph.nodes):
        if is_tuple_pooling_node(node) and _split_pooling_node(gm.graph, node):
            changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm



PATCH = Patch(
    name="tuple_pooling",
    title="tuple-returning pooling ops become single-output nodes before partitioning",
    issue="https://github.com/pytorch/TensorRT/issues/3185",
    first_affected="2.2.0",
    fixed_in=None,
    why=(
        "Upstream fuses max_pool*_with_indices only when the indices are unused, so a pool whose indices are "
        "used (or an adaptive max pool) stays a tuple-returning node whose outputs may cross a partition "
        "boundary. On 2.2-2.4 upstream's fusion also gives the fused node the replaced node's metadata dict "
        "(a stale (values, indices) val on 2.4, emptied on 2.3), so there this pass takes its place."
    ),
)

# First release whose replace_max_pool_with_indices gives the fused node its own single-tensor val.
_UPSTREAM_FUSION_FIXED = (2, 5, 0)


def apply(ctx: PatchContext) -> None:
    manager = post_lowering_passes(ctx)
    upstream = ctx.find_pass(manager, "replace_max_pool_with_indices")
    ours = lowering_pass(decompose_tuple_pooling)
    if upstream is not None and ctx.release < _UPSTREAM_FUSION_FIXED:
        ctx.replace_pass(manager, upstream, ours)
    else:
        # After upstream's fusion (or last, where a release has none): post-lowering runs before partitioning.
        ctx.insert_pass(manager, ours, after=upstream)

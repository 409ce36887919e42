"""Split tuple-returning max pooling nodes into single-output nodes, and unpool in TensorRT-convertible ops.

Upstream problem (pytorch/TensorRT#3185): Torch-TensorRT partitions an ATen FX graph into
TensorRT and PyTorch blocks, and whatever crosses a block boundary must be one tensor: a tuple
output can never cross. ``aten.max_pool{1,2,3}d_with_indices`` and ``aten.adaptive_max_pool{1,2,3}d``
return ``(values, indices)``. Upstream only rewrites ``max_poolNd_with_indices`` and only when the
indices are unused (and on 2.2-2.4 leaves the fused node with the old node's tuple ``meta['val']``),
so a model that uses the indices, or any adaptive max pool, can put a tuple on a boundary and fail
to compile. And no release has a converter that produces pooling indices or for ``max_unpool2d`` /
``max_unpool3d``, so a SegNet-style model is cut into several engines with PyTorch in between.

``decompose_tuple_pooling`` rewrites every such node, indices used or not, into single-output
nodes:

* values of ``max_poolNd_with_indices`` become ``aten.max_poolNd`` (TensorRT has converters);
* values of ``adaptive_max_poolNd`` (no converter on any release) become reshape/slice + ``amax``
  (+ ``cat``) along one spatial dim at a time;
* indices, only where used, by default (``pool_indices="tensorrt"``) become ops Torch-TensorRT
  converts: the windows are gathered from the flattened input with a constant table of flat
  indices (``index_select``; padding points at one ``-inf`` slot), and ATen's choice in each window
  is made explicit with ``amax``/``eq``/``isnan``/``where``/``amin``/``amax``, so it does not depend
  on how any backend breaks ties;
* with ``pool_indices="torch"`` (``TRT_COMPAT_POOL_INDICES=torch``, ``trt_compat.set_pool_indices``),
  or where the input's spatial sizes are not static, indices become ``trt_compat::max_pool_indices``
  / ``trt_compat::adaptive_max_pool_indices``, custom ops that return ATen's own indices and so
  simply run in a PyTorch block.

In ``"tensorrt"`` mode ``aten.max_unpool2d`` / ``aten.max_unpool3d`` (``nn.MaxUnpool1d`` exports as
``max_unpool2d`` between an unsqueeze and a squeeze) become zeros + ``scatter`` on the flattened
spatial dims, so pool, unpool and everything between them can stay in one TensorRT engine (from 2.4;
2.2 and 2.3 convert no ``scatter``, so there each unpool's scatter runs in PyTorch, exactly).

ATen's choice of index (CPU kernels, torch 2.4 and 2.13 alike): in scan order over the valid
(unpadded) window positions, a value replaces the running maximum when it is greater or NaN, starting
from ``-inf`` at the first valid position. So: the last NaN if the window has one, else the first
position holding the maximum (an all ``-inf`` window gives its first valid position; ``0.0`` and
``-0.0`` tie). Flat indices grow with scan order, which is what the decomposition relies on.
"""

from __future__ import annotations

import logging
import math
import operator
from typing import Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import _disable_current_modes
from trt_compat.patches import _pooling
from trt_compat.patches._pooling import bind_args, inherited_meta, per_spatial_dim, pooling_output_size

from trt_compat.describe import op_key
from trt_compat.patching import Defect, Option, Patch, PatchContext, lowering_pass, post_lowering_passes
from trt_compat.probing import Probe

logger = logging.getLogger(__name__)

aten = torch.ops.aten

POOL_INDICES_TENSORRT = "tensorrt"
POOL_INDICES_TORCH = "torch"
POOL_INDICES = Option(
    name="pool_indices",
    env="TRT_COMPAT_POOL_INDICES",
    choices=(POOL_INDICES_TENSORRT, POOL_INDICES_TORCH),
    default=POOL_INDICES_TENSORRT,
    help="where max-pool indices and max_unpool are computed: in ops TensorRT converts (one engine), or in PyTorch",
)

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
            values = _pooling.emit(graph, aten.reshape.default, (values, split), source)
            values = _pooling.emit(graph, aten.amax.default, (values, [dim + 1]), source)
        else:
            # Uneven or overlapping bins (or a symbolic size elsewhere, which a reshape would bake
            # in): reduce each bin's slice separately. A single bin is the whole dim.
            bins = []
            for start, end in adaptive_pool_bins(in_size, out_size):
                window = values
                if (start, end) != (0, in_size):
                    window = _pooling.emit(graph, aten.slice.Tensor, (values, dim, start, end), source)
                bins.append(_pooling.emit(graph, aten.amax.default, (window, [dim], True), source))
            values = bins[0] if len(bins) == 1 else _pooling.emit(graph, aten.cat.default, (bins, dim), source)
        shape[dim] = out_size
    if values is x:
        # Output size equals input size: the values are the input, but must stay a new tensor rather
        # than an alias of it.
        values = _pooling.emit(graph, aten.clone.default, (x,), source)
    return values


def _window_table(
    in_sizes: Sequence[int], per_dim: Sequence[Tuple[torch.Tensor, torch.Tensor]]
) -> Optional[torch.Tensor]:
    """Combine per-dim window positions into flat indices into the flattened spatial dims.

    ``per_dim[d]`` is ``(positions, valid)``, both ``(out_d, window_d)``. The result has shape
    ``(*out, prod(window))`` with the window positions in ATen's scan order (first spatial dim
    outermost) and ``prod(in_sizes)`` -- one past the last input position -- at every invalid
    position. None when some window has no valid position at all: ATen then reports an index
    outside the input, which the decomposition does not reproduce (the indices op is used instead).
    """
    nd = len(in_sizes)
    flat: Any = 0
    valid: Any = True
    for dim, (positions, ok) in enumerate(per_dim):
        shape = [1] * (2 * nd)
        shape[dim], shape[nd + dim] = positions.shape
        flat = flat + (positions * math.prod(in_sizes[dim + 1 :])).reshape(shape)
        valid = valid & ok.reshape(shape)
    out_sizes = [positions.shape[0] for positions, _ in per_dim]
    table = torch.where(valid, flat, math.prod(in_sizes)).reshape(*out_sizes, -1)
    if not bool(valid.reshape(table.shape).any(-1).all()):
        return None
    return table


def max_pool_windows(
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
) -> Optional[torch.Tensor]:
    """The window table (see ``_window_table``) of ``max_poolNd_with_indices``; None for degenerate pools."""
    per_dim = []
    for size, k, s, p, d in zip(in_sizes, kernel, stride, padding, dilation):
        out = pooling_output_size(size, k, s, p, d, ceil_mode)
        if out < 1 or min(k, s, d) < 1:
            return None
        positions = torch.arange(out).unsqueeze(1) * s - p + torch.arange(k).unsqueeze(0) * d
        per_dim.append((positions, (positions >= 0) & (positions < size)))
    return _window_table(in_sizes, per_dim)


def adaptive_max_pool_windows(in_sizes: Sequence[int], output_size: Sequence[int]) -> Optional[torch.Tensor]:
    """The window table of ``adaptive_max_poolNd``: each bin padded to the longest bin of its dim."""
    per_dim = []
    for size, out in zip(in_sizes, output_size):
        starts, ends = (torch.tensor(edge) for edge in zip(*adaptive_pool_bins(size, out)))
        positions = starts.unsqueeze(1) + torch.arange(int((ends - starts).max())).unsqueeze(0)
        per_dim.append((positions, positions < ends.unsqueeze(1)))
    return _window_table(in_sizes, per_dim)


def _static_lead(shape: Sequence[Any]) -> Optional[List[int]]:
    """Leading (batch, channel) sizes for a reshape: ints, with -1 for at most one symbolic size."""
    lead = [size if type(size) is int else -1 for size in shape]
    return lead if lead.count(-1) <= 1 else None


def _register_constant(
    gm: torch.fx.GraphModule, graph: torch.fx.Graph, source: torch.fx.Node, tensor: torch.Tensor, fake_mode: Any
) -> torch.fx.Node:
    """A ``get_attr`` node for a new non-persistent buffer of ``gm`` holding ``tensor``."""
    index = 0
    while hasattr(gm, f"_trt_compat_pool_window_{index}"):
        index += 1
    name = f"_trt_compat_pool_window_{index}"
    # Not in the state dict: the table is derived from the graph, not a weight to save or load.
    gm.register_buffer(name, tensor, persistent=False)
    node = graph.get_attr(name)
    node.meta = inherited_meta(source)
    # Static: the table is a constant, and a fresh symbol for its size would only invite guards.
    node.meta["val"] = fake_mode.from_tensor(tensor, static_shapes=True)
    return node


class _Windows(NamedTuple):
    """What the indices decomposition of one pooling node needs: its input and its window table."""

    x: torch.fx.Node
    x_val: FakeTensor
    table: torch.Tensor


def _emit_indices(
    gm: torch.fx.GraphModule,
    graph: torch.fx.Graph,
    source: torch.fx.Node,
    windows: _Windows,
    tables: Dict[Any, Tuple[torch.fx.Node, torch.fx.Node]],
) -> Optional[torch.fx.Node]:
    """Insert converter-friendly nodes computing ATen's pooling indices; None if the shape does not allow it.

    Every window is gathered from the flattened input (``index_select``) into a trailing window
    axis, invalid positions (padding, the tail of a short adaptive bin) set to ``-inf`` by ``where``.
    Then, per window, with ``t`` the table: ``first = amin(where(w == amax(w), t, S))`` is the first
    maximum in scan order (flat indices grow with it, and invalid positions hold ``S``, larger than any
    real index), ``last_nan = amax(where(isnan(w), t, -1))`` the last NaN, and the index is
    ``last_nan`` where it is ``>= 0``, else ``first``. No step depends on how a backend breaks ties.
    (Masking after the gather rather than padding before it: ``constant_pad_nd`` would specialize a
    symbolic batch size.)
    """
    x, x_val, table = windows
    spatial_dims = table.dim() - 1
    lead = _static_lead(x_val.shape[: x_val.dim() - spatial_dims])
    if lead is None:
        return None
    mode, device = x_val.fake_mode, x_val.device
    flat_size = math.prod(x_val.shape[x_val.dim() - spatial_dims :])
    window_axis = len(lead) + spatial_dims

    def emit(target: Any, *args: Any, **kwargs: Any) -> torch.fx.Node:
        return _pooling.emit(graph, target, args, source, kwargs=kwargs, fake_mode=mode)

    with _disable_current_modes():
        # Pools with the same geometry share their constants.
        key = (tuple(table.shape), tuple(table.flatten().tolist()), str(device))
        if key not in tables:
            table = table.to(device)
            # Invalid positions read element 0 and are masked afterwards.
            gather_index = torch.where(table < flat_size, table, 0).flatten()
    if key not in tables:
        tables[key] = (
            _register_constant(gm, graph, source, table, mode),
            _register_constant(gm, graph, source, gather_index, mode),
        )
    table_node, gather_node = tables[key]
    flat_x = emit(aten.reshape.default, x, lead + [flat_size])
    gathered = emit(aten.index_select.default, flat_x, len(lead), gather_node)
    gathered = emit(aten.reshape.default, gathered, lead + list(table.shape))
    valid = emit(aten.lt.Scalar, table_node, flat_size)
    minus_inf = emit(aten.scalar_tensor.default, -math.inf, dtype=x_val.dtype, device=device)
    windows_node = emit(aten.where.self, valid, gathered, minus_inf)
    maximum = emit(aten.amax.default, windows_node, [window_axis], True)
    is_max = emit(aten.eq.Tensor, windows_node, maximum)
    past_end = emit(aten.scalar_tensor.default, flat_size, dtype=torch.int64, device=device)
    first = emit(aten.amin.default, emit(aten.where.self, is_max, table_node, past_end), [window_axis])
    is_nan = emit(aten.isnan.default, windows_node)
    none = emit(aten.scalar_tensor.default, -1, dtype=torch.int64, device=device)
    last_nan = emit(aten.amax.default, emit(aten.where.self, is_nan, table_node, none), [window_axis])
    return emit(aten.where.self, emit(aten.ge.Scalar, last_nan, 0), last_nan, first)


def _static_spatial_val(x: torch.fx.Node, spatial_dims: int) -> Optional[torch.Tensor]:
    """``x``'s val when it has the pooling rank and static spatial sizes, else None."""
    val = x.meta.get("val")
    if (
        isinstance(val, torch.Tensor)
        and val.dim() in (spatial_dims + 1, spatial_dims + 2)
        and all(type(size) is int and size >= 1 for size in val.shape[-spatial_dims:])
    ):
        return val
    return None


class _Rewrite(NamedTuple):
    """How to replace one pooling node: a values builder, the indices op and its arguments, and windows.

    ``windows`` builds what the TensorRT-convertible indices need, or returns None when the node's
    input gives no static geometry (the indices op is used then).
    """

    emit_values: Optional[Callable[[torch.fx.Graph], torch.fx.Node]]
    indices_op: Any
    indices_args: Tuple[Any, ...]
    windows: Callable[[], Optional[_Windows]]


# The TensorRT-convertible indices gather every pooling window. A pool whose windows overlap a lot (a large kernel
# with stride 1) would gather far more than its input, and its constant index tables would weigh a lot: above
# these budgets its indices come from trt_compat::max_pool_indices in a PyTorch block instead (logged).
MAX_GATHER_RATIO = 16  # gathered window elements per input element: a 4x4 window at stride 1
MAX_TABLE_BYTES = 64 * 2**20  # the two int64 index tables of one pool geometry


def _within_budget(name: str, in_sizes: Sequence[int], entries: int) -> bool:
    ratio = entries / math.prod(in_sizes)
    table_bytes = 2 * 8 * entries
    if ratio <= MAX_GATHER_RATIO and table_bytes <= MAX_TABLE_BYTES:
        return True
    logger.info(
        "%s: indices stay in PyTorch: its windows would gather %.1fx its input (budget %d) with %.1f MiB of "
        "index tables (budget %d MiB)",
        name,
        ratio,
        MAX_GATHER_RATIO,
        table_bytes / 2**20,
        MAX_TABLE_BYTES // 2**20,
    )
    return False


def _windows_of(
    x: torch.fx.Node,
    spatial_dims: int,
    build: Callable[[Sequence[int]], Optional[torch.Tensor]],
    entries: Callable[[Sequence[int]], int],
    name: str,
) -> Callable[[], Optional[_Windows]]:
    def windows() -> Optional[_Windows]:
        val = _static_spatial_val(x, spatial_dims)
        # -inf masking and NaN checks are meaningful for floating inputs only.
        if not isinstance(val, FakeTensor) or not val.dtype.is_floating_point:
            return None
        in_sizes = list(val.shape[-spatial_dims:])
        if not _within_budget(name, in_sizes, entries(in_sizes)):
            return None
        # The table is real data, but torch.compile runs lowering passes under its fake mode.
        with _disable_current_modes():
            table = build(in_sizes)
        return None if table is None else _Windows(x, val, table)

    return windows


def _plan_max_pool(node: torch.fx.Node, values_val: Optional[torch.Tensor]) -> Optional[_Rewrite]:
    spatial_dims = MAX_POOL_WITH_INDICES_OPS[node.target]
    bound = bind_args(node, _MAX_POOL_PARAMS, _MAX_POOL_DEFAULTS)
    if bound is None or not isinstance(bound["self"], torch.fx.Node) or type(bound["ceil_mode"]) is not bool:
        logger.debug("leaving %s alone: unexpected arguments %s %s", node.name, node.args, node.kwargs)
        return None
    stride = bound["stride"]
    if isinstance(stride, (list, tuple)) and len(stride) == 0:
        stride = bound["kernel_size"]  # ATen's meaning of an empty stride
    per_dim = [
        per_spatial_dim(value, spatial_dims)
        for value in (bound["kernel_size"], stride, bound["padding"], bound["dilation"])
    ]
    if any(value is None for value in per_dim):
        logger.debug("leaving %s alone: pooling parameters are not constant int lists", node.name)
        return None

    def emit_values(graph: torch.fx.Graph) -> torch.fx.Node:
        return _pooling.emit(graph, _MAX_POOL[spatial_dims], node.args, node, values_val, node.kwargs)

    def build(in_sizes: Sequence[int]) -> Optional[torch.Tensor]:
        return max_pool_windows(in_sizes, *per_dim, bound["ceil_mode"])

    def entries(in_sizes: Sequence[int]) -> int:
        kernel, stride, padding, dilation = per_dim
        outputs = [
            pooling_output_size(*geometry, bound["ceil_mode"])
            for geometry in zip(in_sizes, kernel, stride, padding, dilation)
        ]
        return max(0, math.prod(outputs)) * math.prod(kernel)

    return _Rewrite(
        emit_values,
        MAX_POOL_INDICES,
        (bound["self"], *per_dim, bound["ceil_mode"]),
        _windows_of(bound["self"], spatial_dims, build, entries, node.name),
    )


def _plan_adaptive_max_pool(node: torch.fx.Node, values_used: bool) -> Optional[_Rewrite]:
    spatial_dims = ADAPTIVE_MAX_POOL_OPS[node.target]
    bound = bind_args(node, _ADAPTIVE_PARAMS, {})
    output_size = None if bound is None else per_spatial_dim(bound["output_size"], spatial_dims)
    if output_size is None or min(output_size) < 1 or not isinstance(bound["self"], torch.fx.Node):
        logger.debug("leaving %s alone: unexpected arguments %s %s", node.name, node.args, node.kwargs)
        return None
    x = bound["self"]
    emit_values = None
    if values_used:
        # The bins depend on the input's spatial sizes, which only its meta['val'] can tell.
        val = _static_spatial_val(x, spatial_dims)
        if val is None:
            logger.debug("leaving %s alone: its input has no static spatial sizes in meta['val']", node.name)
            return None

        def emit_values(graph: torch.fx.Graph) -> torch.fx.Node:
            # The decomposition's vals come from running its own ops rather than from the old tuple
            # val: they must match what fake propagation of the new nodes gives, strides included.
            return _emit_adaptive_max(graph, node, x, val.shape, output_size)

    def build(in_sizes: Sequence[int]) -> Optional[torch.Tensor]:
        return adaptive_max_pool_windows(in_sizes, output_size)

    def entries(in_sizes: Sequence[int]) -> int:
        longest = [
            max(end - start for start, end in adaptive_pool_bins(size, out)) for size, out in zip(in_sizes, output_size)
        ]
        return math.prod(output_size) * math.prod(longest)

    return _Rewrite(
        emit_values,
        ADAPTIVE_MAX_POOL_INDICES,
        (x, output_size),
        _windows_of(x, spatial_dims, build, entries, node.name),
    )


def _tuple_val(node: torch.fx.Node) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)) and len(val) == 2 and all(isinstance(t, torch.Tensor) for t in val):
        return val[0], val[1]
    return None


def _split_pooling_node(
    gm: torch.fx.GraphModule, node: torch.fx.Node, in_tensorrt: bool, tables: Dict[Any, Any]
) -> bool:
    """Replace one tuple pooling node by single-output nodes; False if it had to be left alone."""
    graph = gm.graph
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
        if indices_used and in_tensorrt:
            windows = rewrite.windows()
            if windows is not None:
                indices = _emit_indices(gm, graph, node, windows, tables)
            if indices is None:
                logger.debug("%s: indices stay in PyTorch (no static window geometry)", node.name)
        if indices_used and indices is None:
            indices = _pooling.emit(graph, rewrite.indices_op, rewrite.indices_args, node, indices_val)
    for getitems, replacement in zip(users, (values, indices)):
        for getitem in getitems:
            if getitem.users:
                getitem.replace_all_uses_with(replacement)
            graph.erase_node(getitem)
    graph.erase_node(node)
    return True


_MAX_UNPOOL_OPS = {aten.max_unpool2d.default: 2, aten.max_unpool3d.default: 3}
_MAX_UNPOOL_PARAMS = {
    2: ("self", "indices", "output_size"),
    3: ("self", "indices", "output_size", "stride", "padding"),
}


def is_max_unpool_node(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and node.target in _MAX_UNPOOL_OPS


def _decompose_max_unpool_node(graph: torch.fx.Graph, node: torch.fx.Node) -> bool:
    """Replace ``max_unpoolNd`` by zeros + ``scatter`` over flattened spatial dims; False if left alone.

    ATen writes ``self[..., i]`` to flat position ``indices[..., i]`` of each zero-filled output plane,
    which is exactly ``scatter`` along the flattened spatial dim. The shapes must be static (the zeros
    need their size), else the node stays as it is.
    """
    spatial_dims = _MAX_UNPOOL_OPS[node.target]
    bound = bind_args(node, _MAX_UNPOOL_PARAMS[spatial_dims], {})
    output_size = None if bound is None else per_spatial_dim(bound["output_size"], spatial_dims)
    if output_size is None or not all(isinstance(bound[k], torch.fx.Node) for k in ("self", "indices")):
        logger.debug("leaving %s alone: unexpected arguments %s %s", node.name, node.args, node.kwargs)
        return False
    x, indices = bound["self"], bound["indices"]
    x_val, indices_val = x.meta.get("val"), indices.meta.get("val")
    if not (
        isinstance(x_val, FakeTensor)
        and isinstance(indices_val, FakeTensor)
        and x_val.dim() in (spatial_dims + 1, spatial_dims + 2)
        and indices_val.dtype == torch.int64
        and tuple(indices_val.shape) == tuple(x_val.shape)
        and all(type(size) is int for size in x_val.shape)
    ):
        logger.debug("leaving %s alone: its inputs have no static shapes in meta['val']", node.name)
        return False
    lead = list(x_val.shape[: x_val.dim() - spatial_dims])
    in_flat = math.prod(x_val.shape[x_val.dim() - spatial_dims :])
    mode = x_val.fake_mode

    def emit(target: Any, *args: Any, **kwargs: Any) -> torch.fx.Node:
        return _pooling.emit(graph, target, args, node, kwargs=kwargs, fake_mode=mode)

    with graph.inserting_before(node):
        source = emit(aten.reshape.default, x, lead + [in_flat])
        flat_indices = emit(aten.reshape.default, indices, lead + [in_flat])
        # A zero scalar expanded rather than aten.full, which has no converter before 2.5.
        zero = emit(aten.scalar_tensor.default, 0, dtype=x_val.dtype, device=x_val.device)
        zeros = emit(aten.expand.default, zero, lead + [math.prod(output_size)])
        scattered = emit(aten.scatter.src, zeros, len(lead), flat_indices, source)
        result = emit(aten.reshape.default, scattered, lead + output_size)
    node.replace_all_uses_with(result)
    graph.erase_node(node)
    return True


def decompose_tuple_pooling(
    gm: torch.fx.GraphModule, pool_indices: Optional[str] = None, keep_in_torch: FrozenSet[str] = frozenset()
) -> torch.fx.GraphModule:
    """Rewrite every tuple-returning max pooling node of ``gm`` into single-output nodes, in place.

    ``pool_indices`` is ``"tensorrt"`` (indices and ``max_unpoolNd`` in ops Torch-TensorRT converts) or
    ``"torch"`` (indices from the ``trt_compat::`` ops, unpooling untouched); None reads the current
    setting (``trt_compat.set_pool_indices``, else ``TRT_COMPAT_POOL_INDICES``), so it may change after
    import. Nodes whose op is in ``keep_in_torch`` (the compile's torch_executed_ops, as
    ``aten.max_pool2d_with_indices.default``) are left exactly as they are, so they run in PyTorch as the user asked.
    Nodes with a user other than ``getitem(node, 0|1)`` are left alone (logged at debug level),
    as are adaptive pools whose values are used but whose input spatial sizes are not static. ``gm`` is
    recompiled only if something changed.
    """
    mode = POOL_INDICES.value() if pool_indices is None else POOL_INDICES.check(pool_indices)
    in_tensorrt = mode == POOL_INDICES_TENSORRT
    changed = False
    tables: Dict[Any, Any] = {}
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and op_key(node.target) in keep_in_torch:
            continue  # the user asked for this op to run in PyTorch (torch_executed_ops): it stays as it is
        if is_tuple_pooling_node(node):
            changed = _split_pooling_node(gm, node, in_tensorrt, tables) or changed
        elif in_tensorrt and is_max_unpool_node(node):
            changed = _decompose_max_unpool_node(gm.graph, node) or changed
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm


class PoolIndicesViews(torch.nn.Module):
    """The reproducer: pooling whose indices are used (unpooling), with views in between."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2, return_indices=True)
        self.unpool = torch.nn.MaxUnpool2d(2)
        self.conv2 = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (1, 3, 16, 16)
        y = torch.relu(self.conv1(x))
        y, indices = self.pool(y)
        n, c, h, w = y.shape
        y = y.view(n, c, h * w).relu().view(n, c, h, w)
        return self.conv2(self.unpool(y, indices)).view(n, -1)


def check_indices_tuple_node(probe: Probe) -> Optional[str]:
    gm = probe.export_and_lower(PoolIndicesViews().eval(), torch.randn(1, 3, 16, 16))
    left = [node.name for node in gm.graph.nodes if is_tuple_pooling_node(node)]
    return f"tuple-returning pooling node(s) {', '.join(left)} reach partitioning" if left else None


def _indices_used(node: torch.fx.Node) -> bool:
    users = _getitem_users(node)
    return users is None or bool(users[1])


def demonstrate(say: Callable[[str], None]) -> list:
    """``trt-compat demo``: the embedded model's SegNet-style pool, whose indices feed ``max_unpool2d``."""
    from trt_compat.demo import WITH, WITHOUT, Check, count, example_input, exported_graph, identical

    say(
        "upstream: a max pool becomes a single-output node only when its indices are unused; one whose indices are "
        "used stays a tuple-returning node, whose outputs cannot cross a TensorRT block boundary, and no release "
        "converts the indices or max_unpool2d: a SegNet-style model is cut into several engines (#3185)."
    )
    gm, x = exported_graph(), example_input()
    expected = gm(x)
    unpool = {aten.max_unpool2d.default}
    upstream_keeps = sum(is_tuple_pooling_node(node) and _indices_used(node) for node in gm.graph.nodes)
    unpools = count(gm, unpool)
    say(f"without trt_compat (upstream's fusion rule): tuple-returning pools {upstream_keeps}, max_unpool2d {unpools}")
    decompose_tuple_pooling(gm, POOL_INDICES_TENSORRT)
    left = sum(is_tuple_pooling_node(node) for node in gm.graph.nodes) + count(gm, unpool)
    exact = identical(gm(x), expected)
    say(
        f"with trt_compat: tuple-returning pools and max_unpool2d left {left} (indices and unpooling in ops TensorRT "
        f"converts); outputs bit-identical to eager: {exact}"
    )
    return [
        Check(PATCH.name, WITHOUT, "upstream's fusion leaves a tuple-returning pool", upstream_keeps > 0),
        Check(PATCH.name, WITH, "no tuple-returning pool or max_unpool2d left", left == 0, f"{left} left"),
        Check(PATCH.name, WITH, "outputs bit-identical to eager", exact),
    ]


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
        "(a stale (values, indices) val on 2.4, emptied on 2.3), so there this pass takes its place. No release "
        "converts pooling indices or max_unpool, so by default they are decomposed into ops it does convert."
    ),
    defects=(
        Defect(
            "indices_tuple_node",
            "#3185 a max pool whose indices are used reaches partitioning as a tuple-returning node",
            check_indices_tuple_node,
        ),
    ),
    options=(POOL_INDICES,),
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

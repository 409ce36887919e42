"""Rewrite the max and average pools Torch-TensorRT's converters reject into pools they accept.

Upstream problem: the capability validators of every release from 2.2.0 to 2.14.0 (unchanged in all of
them) reject ``aten.max_pool{1,2,3}d`` when ``args[4]`` (dilation) is not the int ``1`` or ``args[5]``
(ceil_mode) is not ``False``, and ``aten.avg_pool{1,2,3}d`` when ``args[4]`` (ceil_mode) is not ``False``
or ``args[6]`` (divisor_override) is set. An exported ``ceil_mode=True`` max pool always spells out its
dilation (``[1, 1]``, which is not ``1`` either), and after ``tuple_pooling`` every max pool is an
``aten.max_poolNd`` node, so each such pool runs in PyTorch between two TensorRT engines: torchvision's
GoogLeNet is 11 engines, SqueezeNet 4, a ceil-mode SegNet 4 or more.

``make_pools_convertible`` rewrites each rejected pool, before partitioning, into ops the same release
converts, computing exactly what ATen computes (bit for bit in eager mode, any float dtype, NaN, +-inf,
ties and signed zeros included):

* max, ``ceil_mode``: the windows ceil mode adds overhang the input's end; ``constant_pad_nd`` with
  ``-inf`` there (``-inf`` never wins a window and every window holds at least one input element) and a
  ``ceil_mode=False`` pool over the padded input see the same elements in the same scan order.
* max, ``dilation > 1`` (per dilated dim): pad with ``-inf`` (ATen's own padding made explicit) to
  ``M * d`` elements, reshape to ``(M, d)`` and move the ``d`` phases into the channel dim, where a
  dilated window is a contiguous one; an undilated stride-1 pool, the phases moved back, and a strided
  ``slice`` picks ATen's windows (output ``t`` of the stride-1 pool is window start ``t``).
* avg, ``ceil_mode``: the added last window of a dim is clipped by ATen (its divisor counts the padding
  only up to ``size + padding``, or only the input elements without ``count_include_pad``), so no single
  pool gives it. Per dim, the windows that fit come from the ``ceil_mode=False`` pool and the clipped one
  from a pool whose kernel is exactly that window (a ``slice`` of the input, zero-padded where ATen counts
  padding); the pieces are joined with ``cat``. Each output is the same sum of the same elements in the
  same order divided by the same divisor (added zeros leave a sum unchanged: ATen's sums start at +0.0,
  so they are never -0.0).
* avg, ``divisor_override``: exact only when it equals the kernel volume, which every window of a
  zero-padded ``count_include_pad`` pool divides by; any other divisor is left in PyTorch.

Indices are not this module's business: ``tuple_pooling`` computes them from the unpadded input (or with ATen's
own op), and only the values node, an ``aten.max_poolNd``, is rewritten here.

Left in PyTorch, logged with the node's name: a ``divisor_override`` other than the kernel volume (no converted
pool divides by anything else), integer inputs, parameters or spatial sizes that are not constants, a dilated
pool whose input has more than one symbolic leading size (its reshapes could not say them), and any pool whose
replacement needs an op the release does not convert for that node (2.3/2.4: ``constant_pad_nd`` and
``avg_poolNd`` with a symbolic batch size).

Nothing here guesses what a release converts: the emitted nodes are checked with the ``accepts``
predicate (the release's converter registry, configured with the compile's own settings, which
``trt_compat.patching.compile_settings`` finds on every release), and a pool whose replacement contains a
rejected node is left as it was.
A pool is rewritten only when its replacement joins a block that exists anyway at ``min_block_size=1``
(its input is computed in TensorRT, or it reads a graph input and a user runs in TensorRT); otherwise
it stays in PyTorch, logged with the node name. Pools whose op is in ``leave_alone`` (the user's
``torch_executed_ops``) are never touched.

Engines, as measured (``benchmarks/bench_blocks.py``, 2.5.0 and 2.14.0, dryrun): with ``min_block_size=1``
no case has more TensorRT blocks with the rewrite than without. ``min_block_size`` itself is not taken
into account: the replacement's nodes count towards it, so converted nodes next to a rejected pool that
upstream leaves in PyTorch for being fewer than ``min_block_size`` can, with the replacement, become a
block of their own. At Torch-TensorRT's default ``min_block_size=5``, ``max_pool2d(x, 2, 1,
dilation=2) * 2``, ``avg_pool2d(x, 3, 2, ceil_mode=True) + 1``, ``max_pool3d(x, 2, 1, dilation=2,
ceil_mode=True) * 2`` and conv -> dilated max pool -> sort each go from 0 blocks to 1 (of 10, 11, 13
and 10 nodes) on both releases; none of the ten models of the benchmark zoo gains a block (GoogLeNet
10 or 11 -> 1, timm ResNet-18d 4 -> 1). Whether such an extra block runs faster or slower than its
nodes in PyTorch cannot be measured without building engines (a GPU).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensor
from torch.fx.node import _get_qualified_name
from trt_compat.patches import _pooling
from trt_compat.patches._pooling import bind_args, per_spatial_dim, pooling_output_size

from trt_compat.patching import Defect, Patch, PatchContext, compile_settings, post_lowering_passes

logger = logging.getLogger(__name__)

aten = torch.ops.aten

MAX_POOL_OPS = {aten.max_pool1d.default: 1, aten.max_pool2d.default: 2, aten.max_pool3d.default: 3}
AVG_POOL_OPS = {aten.avg_pool1d.default: 1, aten.avg_pool2d.default: 2, aten.avg_pool3d.default: 3}

_MAX_PARAMS = ("self", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
_MAX_DEFAULTS = {"stride": [], "padding": [0], "dilation": [1], "ceil_mode": False}
_AVG_PARAMS = ("self", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_AVG_DEFAULTS = {"stride": [], "padding": [0], "ceil_mode": False, "count_include_pad": True, "divisor_override": None}


def _arg(node: torch.fx.Node, index: int, default: Any) -> Any:
    # The validators read positional arguments only, and treat None as absent.
    return node.args[index] if len(node.args) > index and node.args[index] is not None else default


def validators_of_every_release(node: torch.fx.Node) -> bool:
    """What the pool capability validators of Torch-TensorRT 2.2.0-2.14.0 say about ``node`` (all alike).

    Any other node counts as converted. The default of ``make_pools_convertible`` for graphs rewritten
    without Torch-TensorRT (tests, the demo); the patch passes the installed release's registry instead.
    """
    if node.target in MAX_POOL_OPS:
        return _arg(node, 4, 1) == 1 and _arg(node, 5, False) is False
    if node.target in AVG_POOL_OPS:
        return _arg(node, 4, False) is False and _arg(node, 6, None) is None
    return True


def _is_pool(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and (node.target in MAX_POOL_OPS or node.target in AVG_POOL_OPS)


def _matches_any(target: Any, ops: Collection[Any]) -> bool:
    """Whether ``target`` is in ``ops`` as itself, its qualified name (how upstream matches torch_executed_ops) or
    its overload packet."""
    if not ops:
        return False
    if target in ops or (callable(target) and _get_qualified_name(target) in ops):
        return True
    return isinstance(target, torch._ops.OpOverload) and target.overloadpacket in ops


@dataclass(frozen=True)
class _Dim:
    """One spatial dim of a pool: input size, kernel, stride, padding, dilation and output size (ATen's rule)."""

    size: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    out: int

    @property
    def fitting(self) -> int:
        """How many windows lie within ``[-padding, size + padding)``: the ``ceil_mode=False`` output size."""
        return pooling_output_size(self.size, self.kernel, self.stride, self.padding, self.dilation, False)


@dataclass(frozen=True)
class _Pool:
    node: torch.fx.Node
    x: torch.fx.Node
    val: FakeTensor
    dims: Tuple[_Dim, ...]
    count_include_pad: bool
    divisor_override: Optional[int]


def _read_pool(node: torch.fx.Node) -> Tuple[Optional[_Pool], str]:
    """The pool's parameters as constants, or None and why it cannot be rewritten."""
    spatial_dims = MAX_POOL_OPS.get(node.target) or AVG_POOL_OPS[node.target]
    is_max = node.target in MAX_POOL_OPS
    names = _MAX_PARAMS if is_max else _AVG_PARAMS[: 6 if spatial_dims == 1 else 7]
    bound = bind_args(node, names, _MAX_DEFAULTS if is_max else _AVG_DEFAULTS)
    if bound is None or not isinstance(bound["self"], torch.fx.Node):
        return None, f"unexpected arguments {node.args} {node.kwargs}"
    stride = bound["stride"]
    if isinstance(stride, (list, tuple)) and len(stride) == 0:
        stride = bound["kernel_size"]  # ATen's meaning of an empty stride
    per_dim = [
        per_spatial_dim(value, spatial_dims)
        for value in (bound["kernel_size"], stride, bound["padding"], bound.get("dilation", 1))
    ]
    flags = [bound["ceil_mode"]] + ([] if is_max else [bound["count_include_pad"]])
    override = bound.get("divisor_override")
    if any(value is None for value in per_dim) or any(type(flag) is not bool for flag in flags):
        return None, "its parameters are not constants"
    if override is not None and type(override) is not int:
        return None, "its divisor_override is not a constant"
    x = bound["self"]
    val = x.meta.get("val")
    if not (
        isinstance(val, FakeTensor)
        and val.dim() in (spatial_dims + 1, spatial_dims + 2)
        and all(type(size) is int for size in val.shape[-spatial_dims:])
    ):
        return None, "its input has no static spatial sizes in meta['val']"
    if not val.dtype.is_floating_point:
        return None, f"its input is {val.dtype} (only floating point pools are rewritten)"
    dims = []
    for size, k, s, p, d in zip(val.shape[-spatial_dims:], *per_dim):
        if min(k, s, d) < 1 or p < 0 or 2 * p > (k - 1) * d + 1:
            return None, "ATen rejects its parameters"
        out = pooling_output_size(size, k, s, p, d, bound["ceil_mode"])
        if out < 1:
            return None, "ATen rejects its parameters"
        dims.append(_Dim(size, k, s, p, d, out))
    return _Pool(node, x, val, tuple(dims), bound.get("count_include_pad", True), override), ""


class _Emitter:
    """Inserts nodes before the pool, with its provenance and fake vals; remembers them for undoing."""

    def __init__(self, pool: _Pool):
        self.pool = pool
        self.nodes: List[torch.fx.Node] = []

    def __call__(self, target: Any, *args: Any) -> torch.fx.Node:
        node = _pooling.emit(self.pool.node.graph, target, args, self.pool.node, fake_mode=self.pool.val.fake_mode)
        self.nodes.append(node)
        return node

    def pad(self, x: torch.fx.Node, before_after: Sequence[Tuple[int, int]], value: float) -> torch.fx.Node:
        """``constant_pad_nd`` of the spatial dims (``before_after`` per dim, first to last); none when all zero."""
        if not any(before or after for before, after in before_after):
            return x
        # constant_pad_nd lists the last dim first.
        return self(aten.constant_pad_nd.default, x, [n for pair in reversed(before_after) for n in pair], value)

    def with_layout_of(self, x: torch.fx.Node, original: torch.fx.Node) -> torch.fx.Node:
        """``x``, or a copy of it in the memory format of ``original``'s output when their strides differ.

        The replacement ends with strided slices (dilated pools), whose result is not contiguous where the pool's
        is; an op after the pool that runs in PyTorch may have been chosen for the pool's layout (AOT tracing picks
        ``_scaled_dot_product_flash_attention_for_cpu`` for a contiguous query) and computes wrong numbers on
        another one.
        """
        want, have = original.meta.get("val"), x.meta.get("val")
        if isinstance(want, (tuple, list)):
            want = want[0] if want else None
        if not (isinstance(want, torch.Tensor) and isinstance(have, torch.Tensor)):
            return x
        sizes = [*want.shape, *want.stride(), *have.stride()]
        if all(type(n) is int for n in sizes) and all(
            size == 1 or a == b for size, a, b in zip(want.shape, want.stride(), have.stride())
        ):
            return x
        # A plain clone of the (gapped) sliced result is contiguous, a pool's usual layout; a channels-last pool's
        # is asked for by name (a TensorRT engine has no layout: the converter ignores the keyword).
        kwargs = {}
        for memory_format, rank in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
            if want.dim() == rank and not want.is_contiguous() and want.is_contiguous(memory_format=memory_format):
                kwargs = {"memory_format": memory_format}
        node = _pooling.emit(
            self.pool.node.graph,
            aten.clone.default,
            (x,),
            self.pool.node,
            kwargs=kwargs,
            fake_mode=self.pool.val.fake_mode,
        )
        self.nodes.append(node)
        return node

    def undo(self) -> None:
        for node in reversed(self.nodes):
            node.graph.erase_node(node)
        self.nodes.clear()


def _pool_args(kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> Tuple[Any, ...]:
    # Dilation and ceil_mode omitted: the validators accept their defaults only when absent or the int 1.
    return (list(kernel), list(stride), list(padding))


def _emit_max(emit: _Emitter) -> Optional[torch.fx.Node]:
    pool = emit.pool
    op = pool.node.target
    dilated = [dim.dilation > 1 for dim in pool.dims]
    pads, split, phases, kernel, stride, padding = [], [], [], [], [], []
    for dim, is_dilated in zip(pool.dims, dilated):
        kernel.append(dim.kernel)
        if not is_dilated:
            # Only the windows ceil mode adds need more than ATen's own padding, which the pool keeps.
            last_end = (dim.out - 1) * dim.stride + dim.kernel
            pads.append((0, max(0, last_end - dim.size - 2 * dim.padding)))
            split.append(dim.size + pads[-1][1])
            stride.append(dim.stride)
            padding.append(dim.padding)
            continue
        # Window t of a stride-1 pool over the padded dim starts at t and holds t, t+d, ...: in the
        # (M, d) view that is the contiguous run q, q+1, ... of phase t % d, with q = t // d.
        last_start = (dim.out - 1) * dim.stride
        rows = max(last_start // dim.dilation + dim.kernel, -(-(dim.padding + dim.size) // dim.dilation))
        pads.append((dim.padding, rows * dim.dilation - dim.padding - dim.size))
        split.append((rows, dim.dilation))
        phases.append(dim.dilation)
        stride.append(1)
        padding.append(0)
    padded = emit.pad(pool.x, pads, -math.inf)
    if not phases:
        return emit(op, padded, *_pool_args(kernel, stride, padding))

    rank = pool.val.dim() - len(pool.dims)
    lead = [size if type(size) is int else -1 for size in pool.val.shape[:rank]]
    if lead.count(-1) > 1:
        return None  # a reshape can leave one size symbolic only
    unfolded = lead + [n for entry in split for n in (entry if isinstance(entry, tuple) else (entry,))]
    # Axes of ``unfolded``: lead, then per spatial dim (rows, phase) or (size,).
    axes, phase_axes, spatial_axes = rank, [], []
    for entry in split:
        spatial_axes.append(axes)
        if isinstance(entry, tuple):
            phase_axes.append(axes + 1)
        axes += len(entry) if isinstance(entry, tuple) else 1
    channels = lead[-1] * math.prod(phases) if lead[-1] != -1 else -1
    # Always with a batch dim: torch 2.4/2.5's meta kernel of max_pool3d fails on some unbatched layouts.
    batch = lead[:-1] or [1]
    spatial_sizes = [unfolded[axis] for axis in spatial_axes]
    x = emit(aten.reshape.default, padded, unfolded)
    x = emit(aten.permute.default, x, list(range(rank)) + phase_axes + spatial_axes)
    x = emit(aten.reshape.default, x, batch + [channels] + spatial_sizes)
    x = emit(op, x, *_pool_args(kernel, stride, padding))

    pooled = [
        rows - dim.kernel + 1 if is_dilated else dim.out
        for dim, is_dilated, rows in zip(pool.dims, dilated, spatial_sizes)
    ]
    x = emit(aten.reshape.default, x, lead + phases + pooled)
    order, phase_axis = list(range(rank)), rank
    for index, is_dilated in enumerate(dilated):
        order.append(rank + len(phases) + index)
        if is_dilated:
            order.append(phase_axis)
            phase_axis += 1
    x = emit(aten.permute.default, x, order)
    merged = [n * dim.dilation for n, dim in zip(pooled, pool.dims)]
    x = emit(aten.reshape.default, x, lead + merged)
    for index, dim in enumerate(pool.dims):
        if dilated[index]:
            x = emit(aten.slice.Tensor, x, rank + index, 0, (dim.out - 1) * dim.stride + 1, dim.stride)
    return x


def _emit_avg(emit: _Emitter) -> Tuple[Optional[torch.fx.Node], str]:
    pool = emit.pool
    op = pool.node.target
    kernel = [dim.kernel for dim in pool.dims]
    stride = [dim.stride for dim in pool.dims]
    padding = [dim.padding for dim in pool.dims]
    if pool.divisor_override is not None:
        if pool.divisor_override != math.prod(kernel):
            return None, f"divisor_override={pool.divisor_override} is not the kernel volume {math.prod(kernel)}"
        # Zeros where ceil mode's windows overhang, counted like ATen's own padding: every window is then
        # whole and divides by the kernel volume, as the override says.
        ends = [(dim.out - 1) * dim.stride + dim.kernel - dim.size - 2 * dim.padding for dim in pool.dims]
        padded = emit.pad(pool.x, [(0, max(0, end)) for end in ends], 0.0)
        return emit(op, padded, *_pool_args(kernel, stride, padding)), ""

    def pooled(x: torch.fx.Node, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]):
        args = _pool_args(kernel, stride, padding)
        return emit(op, x, *(args if pool.count_include_pad else args + (False, False)))

    def build(index: int, x: torch.fx.Node, kernel: List[int], stride: List[int], padding: List[int]):
        """Dims before ``index`` are settled; the windows of dim ``index`` are split into fitting and clipped."""
        if index == len(pool.dims):
            return pooled(x, kernel, stride, padding)
        dim = pool.dims[index]
        fitting = dim.fitting
        if dim.out == fitting:
            return build(index + 1, x, kernel, stride, padding)
        axis = pool.val.dim() - len(pool.dims) + index
        start = fitting * dim.stride - dim.padding  # the clipped window: [start, size + padding)
        first = max(start, 0)
        tail = x if first == 0 else emit(aten.slice.Tensor, x, axis, first, dim.size)
        if pool.count_include_pad:
            # ATen counts the padding inside [-padding, size + padding): make exactly that explicit.
            around = [(0, 0)] * len(pool.dims)
            around[index] = (first - start, dim.padding)
            tail = emit.pad(tail, around, 0.0)
            width = dim.size + dim.padding - start
        else:
            width = dim.size - first
        clipped = build(
            index + 1,
            tail,
            kernel[:index] + [width] + kernel[index + 1 :],
            stride[:index] + [1] + stride[index + 1 :],
            padding[:index] + [0] + padding[index + 1 :],
        )
        if fitting == 0:
            return clipped
        return emit(aten.cat.default, [build(index + 1, x, kernel, stride, padding), clipped], axis)

    return build(0, pool.x, kernel, stride, padding), ""


def _joins_an_engine(pool: _Pool, in_tensorrt: Callable[[torch.fx.Node], bool], rewritten: Collection) -> bool:
    """Whether the pool's replacement would join an engine that exists anyway rather than be one of its own.

    Its input computed in TensorRT (or by a pool rewritten before it): the replacement depends on nothing else,
    so it joins that block without creating a cycle. Its input a graph input: it joins a user's block.
    """
    producer = pool.x
    if producer in rewritten or in_tensorrt(producer):
        return True
    return producer.op == "placeholder" and any(in_tensorrt(user) for user in pool.node.users)


def make_pools_convertible(
    gm: torch.fx.GraphModule,
    accepts: Optional[Callable[[torch.fx.Node], bool]] = None,
    leave_alone: Collection[Any] = (),
) -> torch.fx.GraphModule:
    """Rewrite, in place, every max/avg pool ``accepts`` rejects into nodes it accepts, exactly as ATen computes.

    ``accepts(node)`` says whether the target release converts a node (default: the pool validators every
    release 2.2.0-2.14.0 has, everything else accepted). ``leave_alone`` holds ops that must stay in
    PyTorch (Torch-TensorRT's ``torch_executed_ops``: overloads, packets or qualified names): such pools
    are not rewritten, and such nodes are not counted as TensorRT neighbours. A pool is left alone, and
    logged, when its parameters or input sizes are not constants, when a replacement node would be
    rejected, or when the replacement would be an engine of its own. ``gm`` is recompiled only if changed.
    """
    accepts = accepts or validators_of_every_release

    def converts(node: torch.fx.Node) -> bool:
        try:
            return bool(accepts(node))
        except Exception:  # a validator that cannot judge a node does not get to break the compile
            logger.debug("trt_compat: the converter check failed on %s", node.name, exc_info=True)
            return False

    def in_tensorrt(node: torch.fx.Node) -> bool:
        if node.op == "get_attr":
            return True
        return node.op == "call_function" and not _matches_any(node.target, leave_alone) and converts(node)

    rewritten = set()
    for node in list(gm.graph.nodes):
        # The validators and converters read positional arguments only: a pool with keyword arguments would be
        # converted as if they were absent, so it is rewritten (to positional ones) even when accepted.
        if not _is_pool(node) or _matches_any(node.target, leave_alone) or (converts(node) and not node.kwargs):
            continue
        try:
            result = _rewrite_if_it_converts(node, in_tensorrt, rewritten)
        except Exception:  # a bug here must cost a graph break at most, never the compile
            logger.warning(
                "trt_compat: leaving %s (%s) in PyTorch: rewriting it failed", node.name, node.target, exc_info=True
            )
            continue
        if result is not None:
            node.replace_all_uses_with(result)
            gm.graph.erase_node(node)
            rewritten.add(result)
    if rewritten:
        gm.graph.lint()
        gm.recompile()
    return gm


def _rewrite_if_it_converts(
    node: torch.fx.Node, in_tensorrt: Callable[[torch.fx.Node], bool], rewritten: Collection
) -> Optional[torch.fx.Node]:
    """The replacement of one rejected pool, inserted before it; None (graph unchanged, reason logged) if none."""
    pool, why = _read_pool(node)
    if pool is None:
        logger.debug("trt_compat: leaving %s (%s) in PyTorch: %s", node.name, node.target, why)
        return None
    if not _joins_an_engine(pool, in_tensorrt, rewritten):
        logger.info(
            "trt_compat: leaving %s (%s) in PyTorch: converted alone it would be an extra TensorRT engine "
            "(no neighbour runs in TensorRT)",
            node.name,
            node.target,
        )
        return None
    emit = _Emitter(pool)
    try:
        with node.graph.inserting_before(node):
            if node.target in MAX_POOL_OPS:
                result, why = _emit_max(emit), "its input has more than one symbolic leading size"
            else:
                result, why = _emit_avg(emit)
            if result is not None:
                result = emit.with_layout_of(result, node)
        rejected = [new for new in emit.nodes if not in_tensorrt(new)]
    except BaseException:
        emit.undo()
        raise
    if result is None or rejected:
        emit.undo()
        if rejected:
            why = (
                f"its replacement needs {', '.join(sorted({str(new.target) for new in rejected}))}, which this "
                "release does not convert here (or torch_executed_ops keeps in PyTorch)"
            )
        logger.info("trt_compat: leaving %s (%s) in PyTorch: %s", node.name, node.target, why)
        return None
    logger.debug("trt_compat: %s rewritten into %d convertible nodes", node.name, len(emit.nodes))
    return result


# ---------------------------------------------------------------------------------------------------------------
# The declared defect: a reproducer the compatibility matrix and `python -m trt_compat verify` run.


class _CeilAndDilatedPools(torch.nn.Module):
    """conv -> ceil-mode avg pool -> conv -> ceil-mode max pool -> dilated max pool.

    The max pools come last: on 2.3/2.4 an upstream max pool in PyTorch that feeds a TensorRT block fails to
    compile (#3185, fixed by tuple_pooling and tuple_partition_inputs), which would hide what this checks.
    """

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(c, 4, 3, padding=1) for c in (3, 4))
        self.avg = torch.nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False)
        self.max = torch.nn.MaxPool2d(3, 2, ceil_mode=True)
        self.dilated = torch.nn.MaxPool2d(2, 1, dilation=2)

    def forward(self, x):
        return self.dilated(self.max(self.convs[1](self.avg(self.convs[0](x)))))


def check_pool_graph_break(probe: Any) -> Optional[str]:
    """None when conv / ceil-mode avg pool / conv / ceil-mode and dilated max pools is one TensorRT block, as eager."""
    torch.manual_seed(0)
    model, x = _CeilAndDilatedPools().eval(), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    compiled = probe.compile(model, x)
    difference = probe.same(compiled.output, expected)
    if difference is not None:
        return f"conv/pool model: {difference}"
    pools = sorted(set(compiled.torch_ops) & {str(op) for op in (*MAX_POOL_OPS, *AVG_POOL_OPS)})
    if pools or len(compiled.blocks) != 1:
        return (
            f"ceil-mode and dilated pools are graph breaks: {len(compiled.blocks)} TensorRT blocks, "
            f"{', '.join(pools) or 'no pool'} in PyTorch"
        )
    return None


def demonstrate(say: Callable[[str], None]) -> list:
    """``trt-compat demo``: the embedded model's SqueezeNet-style ceil-mode max pool, judged by the pool validators
    every release has, then rewritten."""
    from trt_compat.demo import WITH, WITHOUT, Check, example_input, exported_graph, identical, single_output_pool

    say(
        "upstream: every release's max_pool validator rejects ceil_mode=True (and a dilation other than the int 1), "
        "its avg_pool validator ceil_mode=True and divisor_override, so each such pool runs in PyTorch between two "
        "TensorRT engines (torchvision's GoogLeNet: 11 engines, SqueezeNet 4)."
    )
    gm, x = exported_graph(), example_input()
    single_output_pool(gm)  # as upstream's fusion leaves the ceil-mode pool, whose indices are unused
    expected = gm(x)
    rejected = [node.name for node in gm.graph.nodes if _is_pool(node) and not validators_of_every_release(node)]
    say(f"without trt_compat (the pool validators of 2.2.0-2.14.0, all alike): rejected: {', '.join(rejected)}")
    existing = set(gm.graph.nodes)
    make_pools_convertible(gm)
    still = [node.name for node in gm.graph.nodes if _is_pool(node) and not validators_of_every_release(node)]
    added = [str(node.target).replace("aten.", "") for node in gm.graph.nodes if node not in existing]
    exact = identical(gm(x), expected)
    say(
        f"with trt_compat: rewritten into {' + '.join(added)}, which every release converts; pools rejected: "
        f"{len(still)}; outputs bit-identical to eager: {exact}"
    )
    return [
        Check(PATCH.name, WITHOUT, "the validators reject the ceil-mode pool", bool(rejected), ", ".join(rejected)),
        Check(PATCH.name, WITH, "no pool rejected", not still, ", ".join(still)),
        Check(PATCH.name, WITH, "outputs bit-identical to eager", exact),
    ]


# ---------------------------------------------------------------------------------------------------------------
# The patch


PATCH = Patch(
    name="convertible_pools",
    title="ceil_mode and dilated pools become pools Torch-TensorRT converts",
    issue=None,
    first_affected="2.2.0",
    fixed_in=None,
    why=(
        "Every release's max_pool validator rejects ceil_mode=True and dilation other than the int 1 (an exported "
        "ceil-mode pool always lists dilation [1, 1]), and the avg_pool validator ceil_mode=True and "
        "divisor_override, so each such pool runs in PyTorch between two engines (GoogLeNet: 11 engines)."
    ),
    defects=(
        Defect(
            key="pool_graph_break",
            title="a ceil_mode or dilated max/avg pool is a graph break",
            check=check_pool_graph_break,
        ),
    ),
)

# What each release's compile_module tells its converter registry right after lowering.
_REGISTRY_STATE = ("compilation_settings", "disallowed_targets", "assume_dynamic_shape_support")


@contextlib.contextmanager
def _registry_configured(registry: Any, settings: Any) -> Iterator[None]:
    """The registry answering for ``settings`` as it will during partitioning; its previous state restored after."""
    if settings is None:
        yield
        return
    saved = {name: getattr(registry, name) for name in _REGISTRY_STATE if hasattr(registry, name)}
    try:
        if hasattr(registry, "set_compilation_settings"):
            registry.set_compilation_settings(settings)
        else:
            registry.set_disallowed_targets(set(getattr(settings, "torch_executed_ops", None) or ()))
            if hasattr(registry, "set_dynamic_shape_support"):
                registry.set_dynamic_shape_support(bool(getattr(settings, "assume_dynamic_shape_support", False)))
        yield
    finally:
        for name, value in saved.items():
            setattr(registry, name, value)


def _pass_for(registry: Any) -> Callable:
    def make_pools_convertible_for_release(gm: torch.fx.GraphModule, *release_specific: Any) -> torch.fx.GraphModule:
        settings = compile_settings(release_specific)
        leave_alone = tuple(getattr(settings, "torch_executed_ops", ()) or ())
        with _registry_configured(registry, settings):
            return make_pools_convertible(gm, accepts=registry.__contains__, leave_alone=leave_alone)

    make_pools_convertible_for_release.__module__ = __name__
    make_pools_convertible_for_release.__doc__ = make_pools_convertible.__doc__
    return make_pools_convertible_for_release


def apply(ctx: PatchContext) -> None:
    registry_module = ctx.import_module("torch_tensorrt.dynamo.conversion._ConverterRegistry")
    registry = ctx.require_attr(
        registry_module, "DYNAMO_CONVERTERS", lambda found: callable(getattr(found, "__contains__", None))
    )
    manager = post_lowering_passes(ctx)
    # Last, so after tuple_pooling, which turns max_poolNd_with_indices into max_poolNd nodes (it takes the place
    # of, or follows, upstream's replace_max_pool_with_indices, which every release 2.2-2.14 has).
    ctx.insert_pass(manager, _pass_for(registry), after=None)

"""Give the result of Torch-TensorRT's ``slice_scatter`` decomposition the layout eager's ``slice_scatter`` has.

Not reported upstream yet; found by the differential campaign (compat/DIFFERENTIAL.md, generated graph
gen-0-0168). Torch-TensorRT 2.4.0 to 2.13.x registers its own decomposition of ``aten.slice_scatter`` in
``TORCH_TRT_DECOMPOSITIONS`` (``select_scatter``'s goes through it), which AOT tracing applies on both compile paths:
``torch.scatter`` into ``arange`` indices, or, when the slice covers the whole dimension, the source itself. Eager's
``slice_scatter`` returns a copy of its input in the input's layout (a clone, ``preserve_format``); the traced
``scatter`` is contiguous, and the source has its own layout. The values are right, but functionalization decides by
the layout whether ``.contiguous()`` copies: after ``x[:, 0] += ...`` on a transposed ``x``, ``x * 0.25`` is
contiguous in the traced program, so ``y = (x * 0.25).contiguous()`` becomes the same tensor instead of a copy and
``y.add_(2)`` changes it too. Wrong numbers, no error: the model below is off by 5.45 on 2.12.1 (dryrun on the CPU),
and by as much on 2.4.0, 2.5.0 and 2.13.0; 2.14.0 converts ``slice_scatter`` instead of decomposing it, and 2.3.0 and
older do not decompose it. On the export path (``torch_tensorrt.compile(ir="dynamo")``) the same happens from torch
2.6, whose ``run_decompositions`` applies the table inside its functionalization (measured on 2.9.0, 2.12.1, 2.13.0;
2.4.0 and 2.5.0 are exact there).

Reproducer for an upstream report (2.4.0-2.13.x; ``options={"dryrun": True}`` shows it without a GPU)::

    import torch, torch_tensorrt

    def f(x):
        x = x.transpose(2, 3).clone()
        x[:, 0] += x[:, -1]
        x = x * 0.25
        y = x.contiguous()
        y.add_(2)
        return x * y

    x = torch.randn(2, 4, 9, 7, device="cuda")
    compiled = torch.compile(f, backend="torch_tensorrt", options={"min_block_size": 1})
    print((compiled(x) - f(x)).abs().max())   # 0 in eager semantics; about 5 here

Here upstream's decomposition still runs, and its result is returned as it is when it already has the strides eager's
clone of the input would have. Otherwise it is laid out again: permuted into the input's physical dimension order,
copied contiguous, permuted back (same values, eager's strides; a permute and a copy more in the graph, only for
non-contiguous inputs). With dynamic shapes the sizes and strides are symbolic: their values in the traced example
(hints, read without adding guards) decide the dimension order, which the graph's ops fix whatever the sizes. Left to
upstream: sizes without a known value, and inputs with gaps (not dense), which a permuted copy cannot reproduce.
A ``slice_scatter`` called without ``dim`` (torch 2.8's export path does so for a whole-tensor scatter) gets the
schema's default, 0, which upstream's decomposition does not have.
"""

from typing import Any, Callable, List, Optional, Sequence

import torch

from trt_compat.patching import Defect, NotApplicable, Patch, PatchContext
from trt_compat.probing import decomposes

_SLICE_SCATTER = torch.ops.aten.slice_scatter.default


def eager_strides(tensor: torch.Tensor) -> Optional[List[int]]:
    """The strides eager's ``slice_scatter`` gives its result: the input's own, as numbers (a symbolic size or stride
    counts as the value it has in the traced example: which dimension is outermost is a property of the layout the
    graph's ops produce, not of the sizes). None when a size has no known value, or when the input is not dense and
    non-overlapping (a layout with gaps, which only the view replays of functionalization produce there and no user
    code sees): such results are left as upstream makes them."""
    shape, strides = _numbers(tensor.shape), _numbers(tensor.stride())
    if shape is None or strides is None:
        return None
    return strides if _dense(shape, strides) else None


def _numbers(values: Sequence[Any]) -> Optional[List[int]]:
    """Ints, and symbolic ints as the value they hold in the traced example (their hint: reading it adds no guard);
    None when one has none."""
    numbers = []
    for value in values:
        if not isinstance(value, int):
            value = getattr(getattr(value, "node", None), "hint", None)
            if value is None:
                return None
        numbers.append(int(value))
    return numbers


def _dense(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether the elements fill their memory exactly once (some order of the dimensions is contiguous)."""
    if 0 in shape:
        return True
    expected = 1
    for size, stride in sorted((p for p in zip(shape, strides) if p[0] != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def relaid_out(result: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
    """``result``'s values with the layout of ``strides`` (dense and non-overlapping); size-1 dimensions may
    differ."""
    order = sorted(range(result.dim()), key=lambda dim: -strides[dim])  # outermost first; stable for ties
    back = [order.index(dim) for dim in range(result.dim())]
    return result.permute(order).clone(memory_format=torch.contiguous_format).permute(back)


def with_input_layout(result: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
    """``result`` (a ``slice_scatter`` of ``input_tensor``) in the layout eager gives it."""
    strides = eager_strides(input_tensor)
    if strides is None or not isinstance(result, torch.Tensor) or result.dim() != input_tensor.dim():
        return result
    shape, result_strides = _numbers(result.shape), _numbers(result.stride())
    if shape is None or result_strides is None or shape != _numbers(input_tensor.shape):
        return result
    if _same_layout(shape, result_strides, strides):
        return result
    return relaid_out(result, strides)


def _same_layout(shape: Sequence[int], strides: Sequence[int], wanted: Sequence[int]) -> bool:
    # The stride of a dimension of size 1 never moves an element: it does not count, here or for torch.
    return all(size == 1 or a == b for size, a, b in zip(shape, strides, wanted))


def _keeping_layout(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    input_tensor = args[0] if args else kwargs.get("self", kwargs.get("input_tensor"))
    if len(args) == 2 and "dim" not in kwargs:
        # aten.slice_scatter's schema defaults dim to 0, and torch 2.8's export passes it that way; upstream's
        # decomposition requires it (TypeError: missing 1 required positional argument: 'dim').
        kwargs = {**kwargs, "dim": 0}
    result = wrapped(*args, **kwargs)
    if not isinstance(input_tensor, torch.Tensor):
        return result
    return with_input_layout(result, input_tensor)


# ------------------------------------------------------------------------------------------------------------------
# The declared defect: a reproducer the compatibility matrix and `python -m trt_compat verify` run.


class ScatterThenContiguous(torch.nn.Module):
    """An update of a transposed tensor's row, then a contiguous copy changed in place (gen-0-0168, reduced)."""

    def forward(self, x):
        x = x.transpose(2, 3).clone()
        x[:, 0] += x[:, -1]
        x = x * 0.25
        y = x.contiguous()
        y.add_(2)
        return x * y


def check_scatter_layout(probe: Any) -> Optional[str]:
    if not decomposes(_SLICE_SCATTER):
        raise NotApplicable("this release does not decompose aten.slice_scatter (only 2.4.0-2.13.x do)")
    model, x = ScatterThenContiguous().eval(), torch.linspace(-1.0, 1.0, 504).view(2, 4, 9, 7)
    # The multiplications run in PyTorch, so no TensorRT block feeds the graph's output: 2.10.0's dryrun cannot
    # finish a graph whose output a block produces. The layout decision happens in AOT tracing, before partitioning.
    compiled = probe.compile(model, x, torch_executed_ops={torch.ops.aten.mul.Tensor})
    difference = probe.same(compiled.output, model(x))
    what = "x[:, 0] += x[:, -1] on a transposed x, then y = (x * 0.25).contiguous(); y.add_(2)"
    return None if difference is None else f"{what}: differs from eager: {difference}"


def contiguous_slice_scatter(input_tensor, src, dim, start=None, end=None, step=1):
    """A stand-in for upstream's decomposition of ``slice_scatter`` (2.4.0-2.13.x): a scatter into ``arange``
    indices, right values in a contiguous result."""
    size = input_tensor.shape[dim]
    start = 0 if start is None else start
    end = size if end is None else min(end, size)
    index = torch.arange(start, end, step).view([-1 if d == dim else 1 for d in range(input_tensor.dim())])
    return torch.scatter(input_tensor, dim, index.expand_as(src), src)


def select_scatter_as_slice_scatter(input_tensor, src, dim, index):
    """Upstream's decomposition of ``select_scatter``: a ``slice_scatter`` of one row."""
    return torch.slice_scatter(input_tensor, src.unsqueeze(dim), dim, index, index + 1, 1)


def traced_with(function: Callable, slice_scatter: Callable, *inputs: torch.Tensor) -> torch.fx.GraphModule:
    """``function`` functionalized and traced, as AOT tracing does, with ``slice_scatter`` as the decomposition of
    ``aten.slice_scatter`` (``select_scatter`` goes through it, as upstream's does)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    table = {_SLICE_SCATTER: slice_scatter, torch.ops.aten.select_scatter.default: select_scatter_as_slice_scatter}
    return make_fx(torch.func.functionalize(function), decomposition_table=table)(*inputs)


def demonstrate(say: Callable[[str], None]) -> list:
    """``trt-compat demo``: a row update of a transposed tensor, then a contiguous copy changed in place, traced with
    upstream's decomposition (a stand-in) and with trt_compat's wrapper around it, against eager."""
    from trt_compat.demo import WITH, WITHOUT, Check, as_installed, identical

    say(
        "upstream: 2.4.0-2.13.x decompose slice_scatter and select_scatter into a contiguous scatter where eager keeps "
        "the input's layout: AOT tracing then takes a later .contiguous() of a transposed tensor for an alias, and an "
        "in-place change of that copy changes the original too (wrong numbers, no error)."
    )
    model, x = ScatterThenContiguous().eval(), torch.linspace(-1.0, 1.0, 504).view(2, 4, 9, 7)
    expected = model(x)
    results = {
        name: traced_with(model, scatter, x)(x)
        for name, scatter in (
            ("without", contiguous_slice_scatter),
            ("with", as_installed(_keeping_layout, contiguous_slice_scatter)),
        )
    }
    off = (results["without"] - expected).abs().max().item()
    exact = identical(results["with"], expected)
    say(
        "x[:, 0] += x[:, -1] on a transposed x; y = (x * 0.25).contiguous(); y.add_(2); x * y, functionalized and "
        "traced"
    )
    say(f"without trt_compat (a stand-in: upstream's decomposition, a scatter): off from eager by up to {off:.3g}")
    say(f"with trt_compat: bit-identical to eager: {exact}")
    shown = not identical(results["without"], expected)
    return [
        Check(PATCH.name, WITHOUT, "the stand-in's trace differs from eager", shown, f"off by up to {off:.3g}"),
        Check(PATCH.name, WITH, "outputs bit-identical to eager", exact),
    ]


PATCH = Patch(
    name="keep_scatter_layout",
    title="slice_scatter/select_scatter keep eager's layout through Torch-TensorRT's decomposition",
    issue=None,
    first_affected="2.4.0",
    fixed_in="2.14.0",
    why=(
        "2.4.0-2.13.x decompose aten.slice_scatter (and select_scatter) into a contiguous scatter, or the source "
        "itself, where eager returns a copy in the input's layout: AOT tracing then takes a later .contiguous() of "
        "a transposed tensor for an alias, and an in-place change of that copy changes the original too (wrong "
        "numbers, no error). 2.14.0 converts slice_scatter instead of decomposing it."
    ),
    defects=(
        Defect(
            key="scatter_layout",
            title="x[:, 0] += ... on a transposed tensor makes a later .contiguous() copy an alias (wrong numbers)",
            check=check_scatter_layout,
        ),
    ),
)


def apply(ctx: PatchContext) -> None:
    ctx.wrap_decomposition(_SLICE_SCATTER, _keeping_layout)

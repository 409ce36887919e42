"""Keep the dtype of ``empty_strided`` through Torch-TensorRT's decomposition of it.

Not reported upstream yet; found by the differential campaign (compat/DIFFERENTIAL.md: gen-0-0109, gen-0-0135 and
gen-0-0168 on 2.4.0, causal attention off by up to 0.74). From 2.4.0 Torch-TensorRT registers its own decomposition
of ``aten.empty_strided`` in ``TORCH_TRT_DECOMPOSITIONS`` (an ``empty`` of the size, viewed with ``as_strided``),
which AOT tracing applies on both compile paths. It ignores every keyword argument: the tensor is always
``float32`` (and from 2.5.0 always on the default device), whatever ``dtype`` was asked for, so whatever is computed
from it afterwards takes the wrong dtype. Unchanged up to 2.14.0. Measured, dryrun on the CPU:

* 2.4.0: ``scaled_dot_product_attention(x, x, x, is_causal=True)`` of a transposed ``x`` (torch 2.4's decomposition
  builds the causal mask as ``empty_strided(..., dtype=torch.bool)`` filled with ``True``): the mask becomes a
  float tensor of ones that is *added* to the scores instead of masking them. Off by 0.74, no error.
* 2.4.0-2.14.0: ``torch.empty_strided((3, 3), (1, 3), dtype=torch.uint8).fill_(250) + 10`` computes 260 instead of
  4 (uint8 wraps around): integer arithmetic on any ``empty_strided`` tensor becomes float arithmetic.

Reproducer for an upstream report (2.4.0-2.14.0)::

    import torch, torch_tensorrt

    def f(x):
        counts = torch.empty_strided((3, 3), (1, 3), dtype=torch.uint8).fill_(250) + 10   # 4 in uint8
        return x * counts

    x = torch.ones(3, 3, device="cuda")
    compiled = torch.compile(f, backend="torch_tensorrt", options={"min_block_size": 1})
    print(compiled(x)[0, 0].item(), f(x)[0, 0].item())   # 260.0 4.0

Here upstream's decomposition still runs; when its result does not have the ``dtype`` asked for, the same ``empty``
+ ``as_strided`` is made with that dtype, on the device upstream's decomposition chose.
"""

from typing import Any, Callable, Optional

import torch

from trt_compat.patching import Defect, NotApplicable, Patch, PatchContext
from trt_compat.probing import decomposes

_EMPTY_STRIDED = torch.ops.aten.empty_strided.default


def with_requested_dtype(result: torch.Tensor, size: Any, stride: Any, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """``result`` (an ``empty_strided(size, stride)``) if it has ``dtype`` (or none was asked for), else the same
    empty strided tensor made with ``dtype``."""
    if dtype is None or not isinstance(result, torch.Tensor) or result.dtype == dtype:
        return result
    return torch.as_strided(torch.empty(size, dtype=dtype, device=result.device), size, stride)


def _keeping_dtype(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    result = wrapped(*args, **kwargs)
    size = args[0] if args else kwargs.get("size")
    stride = args[1] if len(args) > 1 else kwargs.get("stride")
    return with_requested_dtype(result, size, stride, kwargs.get("dtype"))


# ------------------------------------------------------------------------------------------------------------------
# The declared defects: reproducers the compatibility matrix and `python -m trt_compat verify` run.


class CausalAttention(torch.nn.Module):
    """Causal self-attention of a transposed tensor (gen-0-0109, reduced)."""

    def forward(self, x):
        x = x.transpose(2, 3)
        return torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True) * 2.0


class WrappingCounts(torch.nn.Module):
    """uint8 arithmetic on an ``empty_strided`` tensor: 250 + 10 wraps around to 4."""

    def forward(self, x):
        counts = torch.empty_strided((3, 3), (1, 3), dtype=torch.uint8).fill_(250) + 10
        return x * counts


# Both models end with a multiplication kept in PyTorch, so that no TensorRT block produces the graph's output:
# 2.10.0's dryrun cannot finish a graph whose output a block produces.
_OUTPUT_IN_PYTORCH = {"torch_executed_ops": {torch.ops.aten.mul.Tensor}}


def _require_decomposition() -> None:
    if not decomposes(_EMPTY_STRIDED):
        raise NotApplicable("this release does not decompose aten.empty_strided (2.4.0 and newer do)")


def check_integer_dtype(probe: Any) -> Optional[str]:
    _require_decomposition()
    model, x = WrappingCounts().eval(), torch.ones(3, 3)
    difference = probe.same(probe.compile(model, x, **_OUTPUT_IN_PYTORCH).output, model(x))
    what = "torch.empty_strided((3, 3), (1, 3), dtype=torch.uint8).fill_(250) + 10"
    return None if difference is None else f"{what}: differs from eager: {difference}"


def check_causal_mask(probe: Any) -> Optional[str]:
    """The first query position may attend only to itself: its output is exactly the first value row, in eager and in
    any correct lowering (softmax of one finite score and -inf elsewhere is exactly [1, 0, ...]), so it is compared
    bit for bit where the rest of the output may round differently (AOT tracing's decompositions)."""
    _require_decomposition()
    model, x = CausalAttention().eval(), torch.linspace(-1.0, 1.0, 504).view(2, 4, 9, 7)
    output = probe.compile(model, x, **_OUTPUT_IN_PYTORCH).output
    difference = probe.same(output[:, :, 0], model(x)[:, :, 0])
    what = "scaled_dot_product_attention(x, x, x, is_causal=True) of x.transpose(2, 3), first query position"
    return None if difference is None else f"{what}: differs from eager: {difference}"


def float32_empty_strided(size: Any, stride: Any, **_ignored: Any) -> torch.Tensor:
    """A stand-in for upstream's decomposition of ``empty_strided`` (2.4.0-2.14.0): a float32 ``empty`` viewed with
    ``as_strided``, every keyword argument (``dtype``) ignored."""
    return torch.as_strided(torch.empty(size), size, stride)


def demonstrate(say: Callable[[str], None]) -> list:
    """``trt-compat demo``: uint8 arithmetic on an ``empty_strided`` tensor, traced with upstream's decomposition
    (a stand-in) and with trt_compat's wrapper around it, against eager."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from trt_compat.demo import WITH, WITHOUT, Check, as_installed, identical

    say(
        "upstream: from 2.4.0 Torch-TensorRT decomposes aten.empty_strided into a float32 empty + as_strided whatever "
        "dtype was asked for: integer arithmetic on such a tensor becomes float arithmetic, and on 2.4.0 the boolean "
        "causal mask of scaled_dot_product_attention is added to the scores (wrong numbers, no error)."
    )
    model, x = WrappingCounts().eval(), torch.ones(3, 3)
    expected = model(x)
    results = {}
    keeping_dtype = as_installed(_keeping_dtype, float32_empty_strided)
    for name, decomposition in (("without", float32_empty_strided), ("with", keeping_dtype)):
        traced = make_fx(model, decomposition_table={_EMPTY_STRIDED: decomposition})(x)
        results[name] = traced(x)
    exact = identical(results["with"], expected)
    say(f"x * (empty_strided(..., dtype=uint8).fill_(250) + 10), x = ones, traced: eager {expected[0, 0].item():g}")
    say(
        f"without trt_compat (a stand-in: upstream's decomposition, float32 empty + as_strided): "
        f"{results['without'][0, 0].item():g}"
    )
    say(f"with trt_compat: {results['with'][0, 0].item():g}; bit-identical to eager: {exact}")
    return [
        Check(PATCH.name, WITHOUT, "the stand-in computes in float32", not identical(results["without"], expected)),
        Check(PATCH.name, WITH, "outputs bit-identical to eager", exact),
    ]


PATCH = Patch(
    name="keep_empty_strided_dtype",
    title="empty_strided keeps its dtype through Torch-TensorRT's decomposition",
    issue=None,
    first_affected="2.4.0",
    fixed_in=None,
    why=(
        "From 2.4.0 Torch-TensorRT decomposes aten.empty_strided into a float32 empty + as_strided whatever dtype "
        "was asked for: integer arithmetic on an empty_strided tensor becomes float arithmetic (uint8 250 + 10 "
        "gives 260), and on 2.4.0 the boolean causal mask of scaled_dot_product_attention(is_causal=True) becomes "
        "ones added to the scores (wrong numbers, no error). Unchanged up to the newest release."
    ),
    defects=(
        Defect(
            key="empty_strided_dtype",
            title="empty_strided(..., dtype=uint8) computes in float32 (250 + 10 gives 260, not 4)",
            check=check_integer_dtype,
        ),
        Defect(
            key="causal_mask_dtype",
            title="scaled_dot_product_attention(is_causal=True) of a transposed tensor ignores the causal mask (2.4)",
            check=check_causal_mask,
        ),
    ),
)


def apply(ctx: PatchContext) -> None:
    ctx.wrap_decomposition(_EMPTY_STRIDED, _keeping_dtype)

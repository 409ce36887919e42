"""keep_empty_strided_dtype without Torch-TensorRT: the dtype fix as a plain function, and the defect's mechanism
traced with torch's own tracer and a decomposition table that decomposes empty_strided the way Torch-TensorRT
2.4.0-2.14.0 does (a float32 ``empty`` viewed with ``as_strided``, keyword arguments ignored), written here from that
behaviour."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from trt_compat.patches import keep_empty_strided_dtype as kesd

aten = torch.ops.aten


def float_empty_strided(size, stride, **_ignored):
    return torch.as_strided(torch.empty(size), size, stride)


def keeping_dtype(*args, **kwargs):
    return kesd._keeping_dtype(float_empty_strided, None, args, kwargs)


def traced(function, empty_strided, *inputs):
    return make_fx(function, decomposition_table={aten.empty_strided.default: empty_strided})(*inputs)


def wrapping_counts(x):
    return x * (torch.empty_strided((3, 3), (1, 3), dtype=torch.uint8).fill_(250) + 10)


def masked_by_flags(x):
    keep = torch.empty_strided((3, 3), (3, 1), dtype=torch.bool).fill_(True).tril()
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype))


def test_float_empty_strided_turns_integer_arithmetic_into_float():
    x = torch.ones(3, 3)
    assert torch.equal(wrapping_counts(x), torch.full((3, 3), 4.0))
    assert torch.equal(traced(wrapping_counts, float_empty_strided, x)(x), torch.full((3, 3), 260.0))
    assert torch.equal(traced(wrapping_counts, keeping_dtype, x)(x), wrapping_counts(x))


def test_boolean_flags_stay_boolean():
    x = torch.randn(3, 3)
    with pytest.raises(RuntimeError, match="bool"):  # upstream's float flags: where() refuses them while tracing
        traced(masked_by_flags, float_empty_strided, x)
    assert torch.equal(traced(masked_by_flags, keeping_dtype, x)(x), masked_by_flags(x))


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float16, torch.uint8])
def test_result_gets_the_requested_dtype_size_and_strides(dtype):
    out = keeping_dtype((2, 3), (1, 2), dtype=dtype)
    assert (out.dtype, out.shape, out.stride()) == (dtype, torch.Size([2, 3]), (1, 2))


def test_result_with_the_requested_dtype_is_returned_as_it_is():
    result = float_empty_strided((2, 3), (3, 1))
    assert kesd.with_requested_dtype(result, (2, 3), (3, 1), torch.float32) is result
    assert kesd.with_requested_dtype(result, (2, 3), (3, 1), None) is result


def test_device_of_upstreams_result_is_kept():
    meta = torch.empty(2, 3, device="meta")
    out = kesd.with_requested_dtype(meta, (2, 3), (3, 1), torch.int32)
    assert (out.device.type, out.dtype) == ("meta", torch.int32)

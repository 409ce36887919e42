"""What the pooling test modules share: the ATen ops by spatial rank, and how two results must agree."""

import torch

aten = torch.ops.aten
NAN = float("nan")
INF = float("inf")

MAX_POOL_WITH_INDICES = {
    1: aten.max_pool1d_with_indices.default,
    2: aten.max_pool2d_with_indices.default,
    3: aten.max_pool3d_with_indices.default,
}
MAX_POOL = {1: aten.max_pool1d.default, 2: aten.max_pool2d.default, 3: aten.max_pool3d.default}
ADAPTIVE_MAX_POOL = {
    1: aten.adaptive_max_pool1d.default,
    2: aten.adaptive_max_pool2d.default,
    3: aten.adaptive_max_pool3d.default,
}


def call_nodes(gm):
    return [node for node in gm.graph.nodes if node.op == "call_function"]


def assert_bit_identical(actual, expected):
    """Same dtype, shape and bits, except that NaN equals NaN whatever its sign bit."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if expected.is_floating_point():
        same = (actual == expected) | (actual.isnan() & expected.isnan())
        assert bool(same.all()), (actual, expected)
        # 0.0 and -0.0 are told apart; a NaN's sign bit is not a value (copies may canonicalise it).
        numbers = ~expected.isnan()
        assert torch.equal(actual.signbit()[numbers], expected.signbit()[numbers])
    else:
        assert torch.equal(actual, expected), (actual, expected)

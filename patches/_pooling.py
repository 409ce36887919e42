"""What the pooling patches share: binding a pool node's arguments, ATen's output-size rule, and emitting nodes that
carry their source's provenance and a correct single-tensor ``meta['val']``. A helper module, not a patch."""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensor

from trt_compat._fake import running_on_fake

logger = logging.getLogger(__name__)

# Keys whose value describes the old node's (tuple) output; every other key is provenance that the
# replacement nodes inherit.
_OUTPUT_META_KEYS = frozenset({"val", "tensor_meta", "example_value", "unbacked_bindings"})


def bind_args(node: torch.fx.Node, names: Sequence[str], defaults: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    if len(node.args) > len(names) or not set(node.kwargs) <= set(names):
        return None
    bound = dict(zip(names, node.args))
    if set(bound) & set(node.kwargs):
        return None
    bound.update(node.kwargs)
    for key, value in defaults.items():
        bound.setdefault(key, value)
    return bound if all(name in bound for name in names) else None


def per_spatial_dim(value: Any, spatial_dims: int) -> Optional[List[int]]:
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


def inherited_meta(source: torch.fx.Node) -> Dict[str, Any]:
    """A fresh meta dict with ``source``'s provenance but not its output description.

    Container values are copied too, so a later pass editing one node's ``nn_module_stack`` (say)
    cannot change another node's.
    """
    return {
        key: copy.copy(value) if isinstance(value, (dict, list)) else value
        for key, value in source.meta.items()
        if key not in _OUTPUT_META_KEYS
    }


def fake_run(
    target: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any], fake_mode: Any = None
) -> Optional[torch.Tensor]:
    """``target`` applied to the fake ``meta['val']`` of the node arguments, or None if they have none.

    ``fake_mode`` serves nodes without node arguments (constants such as ``scalar_tensor``).
    """
    vals: List[Any] = []

    def to_val(arg: torch.fx.Node) -> Any:
        vals.append(arg.meta.get("val"))
        return vals[-1]

    fake_args, fake_kwargs = torch.fx.node.map_arg((args, kwargs), to_val)
    if not all(isinstance(val, FakeTensor) for val in vals):
        return None
    fake_mode = vals[0].fake_mode if vals else fake_mode
    if fake_mode is None:
        return None
    try:
        with running_on_fake(fake_mode):
            result = target(*fake_args, **fake_kwargs)
    except Exception:  # a missing val is allowed; failing the rewrite because of one is not
        logger.debug("could not compute meta['val'] for a %s node", target, exc_info=True)
        return None
    return result if isinstance(result, torch.Tensor) else None


def emit(
    graph: torch.fx.Graph,
    target: Any,
    args: Tuple[Any, ...],
    source: torch.fx.Node,
    val: Optional[torch.Tensor] = None,
    kwargs: Optional[Dict[str, Any]] = None,
    fake_mode: Any = None,
) -> torch.fx.Node:
    """Insert a ``call_function`` node with ``source``'s provenance and a single-tensor ``meta['val']``.

    ``val`` defaults to running ``target`` on the inputs' fake values; with no such values the node
    gets no val at all, since a wrong one would mislead later passes more than a missing one.
    """
    kwargs = dict(kwargs or {})
    node = graph.call_function(target, args, kwargs)
    node.meta = inherited_meta(source)
    if val is None:
        val = fake_run(target, args, kwargs, fake_mode)
    if val is not None:
        node.meta["val"] = val
    return node


def pooling_output_size(in_size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Output length of max pooling along one dim, by ATen's rule (ceil_mode windows must start in the input)."""
    span = in_size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= in_size + padding:
        out -= 1
    return out

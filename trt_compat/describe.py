"""How trt_compat names graph nodes and values in its messages (errors, audit findings, verify results).

Part of the patch-author API. Importing it imports nothing heavy; torch is looked up only once a value is described.
"""

import sys
from typing import Any


def op_name(node: Any) -> str:
    """What a ``torch.fx`` node computes: ``aten.view.default``, ``Tensor.add_``, ``submodule 'blk'``, ..."""
    if node.op == "call_function":
        if hasattr(node.target, "_schema"):  # an OpOverload
            return str(node.target)
        module = getattr(node.target, "__module__", None)
        name = getattr(node.target, "__qualname__", None) or getattr(node.target, "__name__", "")
        return f"{module}.{name}" if module else name or repr(node.target)
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        return f"submodule '{node.target}'"
    if node.op == "get_attr":
        return f"attribute '{node.target}'"
    return "a graph input"


def op_key(op: Any) -> str:
    """One spelling for an op however it is given (``torch.ops.aten.x.default``, ``aten.x.default``, an OpOverload):
    ``aten.x.default``, the way torch_executed_ops entries and op names compare."""
    text = str(op)
    return text[len("torch.ops.") :] if text.startswith("torch.ops.") else text


MISSING = object()
"""Stands for a value that is not there at all (a node without ``meta['val']``)."""


def value(item: Any, detail: bool = False) -> str:
    """``Tensor[6, 4] float32``; with ``detail``, ``Tensor(shape=[6, 4], dtype=torch.float32, device=cpu)``.

    Tuples and lists are described element by element; TensorMetadata like a tensor; anything else by type.
    """
    if item is MISSING:
        return "missing"
    if _is_tensor_like(item):
        shape = ", ".join(str(size) for size in item.shape)
        if detail:
            return f"Tensor(shape=[{shape}], dtype={item.dtype}, device={getattr(item, 'device', '?')})"
        return f"Tensor[{shape}] {str(item.dtype).replace('torch.', '')}"
    if isinstance(item, (tuple, list)):
        inner = ", ".join(value(element, detail) for element in item)
        if detail:
            return f"{type(item).__name__} of {len(item)} ({inner})"
        if isinstance(item, list):
            return f"[{inner}]"
        return f"({inner},)" if len(item) == 1 else f"({inner})"
    return type(item).__name__ if item is not None or detail else "None"


def _is_tensor_like(item: Any) -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    from torch.fx.passes.shape_prop import TensorMetadata

    return isinstance(item, (torch.Tensor, TensorMetadata))

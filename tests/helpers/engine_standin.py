"""TEST STAND-IN for what a TensorRT engine does with state. It is not TensorRT.

In dryrun Torch-TensorRT builds no engine: each accelerated block stays the PyTorch GraphModule it was partitioned
into, and runs as such. For stateless graphs that computes what the engine would. For state it does not, in two ways
that decide whether an update survives, so the integration tests of the export path make each accelerated block
behave as the engine built from it would (test process only, the same with and without trt_compat):

1. **A tensor an engine reads through ``get_attr`` is a weight, copied into the engine when it is built.** The
   converter turns each ``get_attr`` into a constant layer; later changes of the module's tensor do not reach the
   engine (Torch-TensorRT 2.14's own ``lowering/_buffer_lifting.py`` says so: such a buffer "becomes baked into the
   engine", which is why 2.14 lifts mutated buffers to engine inputs). A dryrun block reads the live tensor instead.
   Here each block's ``get_attr`` tensors are copied when the block is "built".
2. **Torch-TensorRT 2.14 writes an eligible KV-cache update in place** (``conversion/impl/slice_scatter.py``
   ``try_emit_kv_cache_update``, ``impl/index_copy.py`` ``index_copy_kv``): an ``IKVCacheUpdateLayer`` whose output is
   aliased to the cache's input binding, and the runtime binds that output to the input tensor itself
   (``runtime/_TRTEngine.py`` ``create_output_tensors``: "reuse the bound input tensor instead of allocating so the
   engine writes through to the user's storage"), so the caller's cache tensor holds the update after the call. A
   dryrun block computes the functional ``slice_scatter`` / ``index_copy`` and the update never reaches the cache. Here
   each write the converter would alias -- decided by upstream's own predicates (``resolve_slice_scatter_write`` and
   ``_kv_eligible`` for ``slice_scatter``, the ``_index_copy_kv_eligible`` validator for ``index_copy``, both honouring
   the ``_trt_no_kv_alias`` marker, the cache being a placeholder of the block) -- writes into the block's input:
   the layer's ``update_len`` positions from ``start`` along dim 2, or ``index_copy_`` at the runtime index. Releases
   without these predicates (before 2.14) alias nothing, as their converters do.

Neither changes what the block computes for its outputs. Nothing here can say what a real engine computes
numerically (TF32, kernel choice); the GPU tier (tests/gpu) is for that.
"""

from __future__ import annotations

import importlib
from typing import Any, List

import torch
from torch.fx import GraphModule, Node

aten = torch.ops.aten


def build_like_engines(partitioned: Any) -> List[str]:
    """Make every accelerated block of a dryrun-compiled module behave as its engine would (in place); the names of
    the writes made in place, as ``block.node``."""
    aliased: List[str] = []
    for name, block in partitioned.named_children():
        if "_run_on_acc" not in name or not isinstance(block, GraphModule):
            continue
        _bake_weights(block)
        aliased += [f"{name}.{node}" for node in _write_aliased_kv_updates(block)]
        block.graph.lint()
        block.recompile()
    return aliased


def _bake_weights(block: GraphModule) -> None:
    for index, node in enumerate([n for n in block.graph.nodes if n.op == "get_attr"]):
        value = block
        for part in node.target.split("."):
            value = getattr(value, part)
        if not isinstance(value, torch.Tensor):
            continue
        baked = f"_engine_weight_{index}"
        block.register_buffer(baked, value.detach().clone())
        node.target = baked


def _upstream(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _write_aliased_kv_updates(block: GraphModule) -> List[str]:
    resolve = _upstream("torch_tensorrt.dynamo.conversion.impl.slice_scatter", "resolve_slice_scatter_write")
    eligible = _upstream("torch_tensorrt.dynamo.conversion.impl.slice_scatter", "_kv_eligible")
    index_copy_eligible = _upstream("torch_tensorrt.dynamo.conversion.aten_ops_converters", "_index_copy_kv_eligible")
    written = []
    for node in list(block.graph.nodes):
        cache = node.args[0] if node.op == "call_function" and node.args else None
        if not (isinstance(cache, Node) and cache.op == "placeholder"):
            continue
        if node.target is aten.slice_scatter.default and resolve is not None and eligible is not None:
            if node.meta.get("_trt_no_kv_alias"):
                continue
            shape = tuple(cache.meta["val"].shape)
            dim = node.args[2] if len(node.args) > 2 else 0
            bounds = [node.args[i] if len(node.args) > i else None for i in (3, 4, 5)]
            start, end, _step, status = resolve(shape, dim, *bounds)
            if status.name != "OK" or not eligible(shape, dim, start, end - start)[0]:
                continue
            with block.graph.inserting_after(node):
                window = block.graph.call_function(aten.narrow.default, (cache, 2, start, end - start))
            with block.graph.inserting_after(window):
                write = block.graph.call_function(aten.copy_.default, (window, node.args[1]))
        elif node.target is aten.index_copy.default and index_copy_eligible is not None:
            if not index_copy_eligible(node):
                continue
            with block.graph.inserting_after(node):
                write = block.graph.call_function(aten.index_copy_.default, (cache, *node.args[1:4]))
        else:
            continue
        # The layer's output is the cache's own storage: later readers read the cache, after the write.
        with block.graph.inserting_after(write):
            updated = block.graph.call_function(aten.alias.default, (cache,))
        node.replace_all_uses_with(updated)
        block.graph.erase_node(node)
        written.append(write.name)
    return written

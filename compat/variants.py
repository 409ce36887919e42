"""The campaign's two dimensions beside the model: the compile path and the shapes.

* path ``compile``: ``torch.compile(model, backend="torch_tensorrt")`` (trt_compat.probing.Probe.compile, dryrun);
* path ``export``: ``torch.export.export`` -> ``torch_tensorrt.dynamo.compile`` (dryrun) -> three calls of the
  compiled module; then, where it runs, ``torch_tensorrt.save`` of the program compiled with trt_compat, loaded and
  called in a fresh process without trt_compat and in one with it (``python -m compat.reload``);
* shapes ``static``: three calls at the first call's shapes (new values each call);
* shapes ``dynamic``: three calls at three sizes of the case's dynamic axes (batch, sequence length), declared to
  the compiler: ``torch._dynamo.mark_dynamic`` on the compile path, ``torch.export.Dim`` +
  ``torch_tensorrt.Input(min_shape, opt_shape, max_shape)`` on the export path.

Every call is compared with eager PyTorch bit for bit (outputs, then the inputs' and buffers' contents after it).

This is the campaign's own minimal export-path runner (the dryrun keeps each accelerated block a PyTorch graph, so
the exported, lowered and partitioned program runs on the CPU): the same CPU stand-ins as the torch.compile path
(Probe._block_inputs_on_cpu: Tensor.cuda, the compiler's and decompositions' device), and ``torch.cuda.
mem_get_info`` answering fixed numbers (2.14 asks for free GPU memory even in dryrun), identically with and without
trt_compat. Imports torch and torch_tensorrt when used, never at import.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

PATHS = ("compile", "export")
SHAPES = ("static", "dynamic")
VARIANTS = tuple((path, shapes) for path in PATHS for shapes in SHAPES)
CALLS = 3
# The default dynamic axis: dim 0 of every tensor input that has the first input's batch size, at these sizes (the
# first is the export example and the opt shape; none is 0 or 1, which torch specializes).
BATCH_SIZES = (2, 3, 5)


class ExportFailed(Exception):
    """torch.export.export itself failed (the message starts with "torch.export: ")."""


class NotRunnable(Exception):
    """This model cannot be measured in this variant (the reason says why); not a compiler failure."""


def key(name: str, path: str, shapes: str) -> str:
    """The record's key in results: the model's name for the torch.compile path with static shapes (as before the
    dimensions existed), ``name@path-shapes`` for the others."""
    return name if (path, shapes) == ("compile", "static") else f"{name}@{path}-{shapes}"


@dataclass
class Dynamic:
    """Which input dimensions are dynamic (input index -> dim -> axis name) and each axis's three sizes."""

    axes: Dict[int, Dict[int, str]]
    sizes: Dict[str, Tuple[int, ...]]
    # min / max of each axis declared to the compiler; default: the smallest and largest size.
    bounds: Dict[str, Tuple[int, int]] = field(default_factory=dict)

    def bound(self, axis: str) -> Tuple[int, int]:
        return self.bounds.get(axis, (min(self.sizes[axis]), max(self.sizes[axis])))


def batch_axis(inputs: tuple) -> Optional[Dynamic]:
    """The default: dim 0 of the tensor inputs that share the first tensor input's dim 0 (none for 0-d inputs)."""
    import torch

    tensors = [(index, x) for index, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.dim() > 0]
    if not tensors:
        return None
    batch = tensors[0][1].shape[0]
    axes = {index: {0: "batch"} for index, x in tensors if x.shape[0] == batch}
    return Dynamic(axes, {"batch": BATCH_SIZES})


def resized(inputs: tuple, dynamic: Dynamic, call: int, seed: int) -> tuple:
    """The inputs at the ``call``-th size of every dynamic axis: floating-point tensors drawn again at the new shape,
    others (token ids, masks, indices) repeated from their own values along the resized dims, so they stay valid."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    result = []
    for index, x in enumerate(inputs):
        dims = dynamic.axes.get(index, {})
        if not isinstance(x, torch.Tensor) or not dims:
            result.append(x.clone() if isinstance(x, torch.Tensor) else x)
            continue
        shape = list(x.shape)
        for dim, axis in dims.items():
            shape[dim] = dynamic.sizes[axis][call]
        if x.is_floating_point():
            result.append(torch.randn(shape, generator=generator).to(x.dtype))
            continue
        value = x
        for dim, axis in dims.items():
            wanted = dynamic.sizes[axis][call]
            value = value.index_select(dim, torch.arange(wanted) % value.shape[dim])
        result.append(value.clone())
    return tuple(result)


def shapes_of(inputs: tuple) -> List[Any]:
    import torch

    return [tuple(x.shape) if isinstance(x, torch.Tensor) else None for x in inputs]


# -- the torch.compile path --------------------------------------------------------------------------------------
def mark_dynamic(inputs: tuple, dynamic: Dynamic) -> None:
    import torch

    for index, dims in dynamic.axes.items():
        for dim, axis in dims.items():
            low, high = dynamic.bound(axis)
            torch._dynamo.mark_dynamic(inputs[index], dim, min=low, max=high)


# -- the export path ---------------------------------------------------------------------------------------------
@dataclass
class Exported:
    """A model through torch.export and torch_tensorrt.dynamo.compile: its first output and the compiled module."""

    output: Any
    module: Any
    program: Any  # the ExportedProgram that was compiled
    blocks: List[str]
    arg_inputs: List[Any]  # what was passed to dynamo.compile (tensors, or Inputs for dynamic dims)
    dynamic_shapes: Any

    def __call__(self, *inputs: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.module(*inputs)


def export_dynamic_shapes(inputs: tuple, dynamic: Optional[Dynamic]) -> Any:
    """torch.export's dynamic_shapes for ``inputs`` (a tuple, one entry per input; one Dim per axis)."""
    if dynamic is None:
        return None
    import torch

    dims = {}
    for axis in dynamic.sizes:
        low, high = dynamic.bound(axis)
        dims[axis] = torch.export.Dim(axis, min=low, max=high)
    return tuple(
        {dim: dims[axis] for dim, axis in dynamic.axes[index].items()} if index in dynamic.axes else None
        for index in range(len(inputs))
    )


def trt_inputs(probe: Any, inputs: tuple, dynamic: Optional[Dynamic]) -> List[Any]:
    """dynamo.compile's inputs: the tensors themselves, or Input(min_shape, opt_shape, max_shape) where dynamic."""
    if dynamic is None:
        return list(inputs)
    torch_tensorrt = probe.torch_tensorrt
    built = []
    for index, x in enumerate(inputs):
        dims = dynamic.axes.get(index)
        if not dims:
            built.append(x)
            continue
        low, opt, high = list(x.shape), list(x.shape), list(x.shape)
        for dim, axis in dims.items():
            low[dim], high[dim] = dynamic.bound(axis)
        built.append(torch_tensorrt.Input(min_shape=low, opt_shape=opt, max_shape=high, dtype=x.dtype))
    return built


@contextlib.contextmanager
def _gpu_memory_query(torch: Any) -> Iterator[None]:
    """2.14's compile asks torch.cuda.mem_get_info even in dryrun; without a GPU it answers fixed numbers."""
    original = torch.cuda.mem_get_info
    torch.cuda.mem_get_info = lambda *args, **kwargs: (8 << 30, 16 << 30)
    try:
        yield
    finally:
        torch.cuda.mem_get_info = original


def compile_exported(probe: Any, model: Any, inputs: tuple, dynamic: Optional[Dynamic] = None) -> Exported:
    """export -> dynamo.compile (dryrun without a GPU, min_block_size 1, build failures raised) -> first call."""
    torch = probe.torch
    dynamo = importlib.import_module("torch_tensorrt.dynamo")
    dynamic_shapes = export_dynamic_shapes(inputs, dynamic)
    try:
        program = torch.export.export(model, tuple(inputs), dynamic_shapes=dynamic_shapes)
    except Exception as exc:  # torch's exporter, before Torch-TensorRT: named apart in the record
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ExportFailed(f"torch.export: {type(exc).__name__}: {first}") from exc
    # Copies as the sample inputs: 2.3-2.4's compile runs each block on them to learn its output shapes (on a GPU on
    # copies it moves there; here, without the CPU copies, on the caller's very tensors, whose in-place updates would
    # then happen once more than in eager).
    samples = tuple(x.clone() if isinstance(x, probe.torch.Tensor) else x for x in inputs)
    arg_inputs = trt_inputs(probe, samples, dynamic)
    settings: Dict[str, Any] = {"min_block_size": 1, "pass_through_build_failures": True}
    if not probe.on_gpu:
        settings["dryrun"] = True
    parameters = inspect.signature(dynamo.compile).parameters
    if "arg_inputs" in parameters:
        settings["arg_inputs"] = arg_inputs
    else:  # up to 2.4: inputs, positional
        settings["inputs"] = arg_inputs
    memory = _gpu_memory_query(torch) if not probe.on_gpu else contextlib.nullcontext()
    with probe._block_inputs_on_cpu(), memory:
        compiled = dynamo.compile(program, **settings)
        with torch.no_grad():
            output = compiled(*inputs)
    blocks = [name for name, _ in probe.accelerated_blocks(compiled)] if hasattr(compiled, "named_children") else []
    return Exported(output, compiled, program, blocks, arg_inputs, dynamic_shapes)


def save(probe: Any, exported: Exported, path: str, inputs: tuple) -> None:
    """torch_tensorrt.save as an ExportedProgram (retraced: dryrun blocks are GraphModules, not engines)."""
    torch_tensorrt = probe.torch_tensorrt
    parameters = inspect.signature(torch_tensorrt.save).parameters
    kwargs: Dict[str, Any] = {"output_format": "exported_program"}
    if "retrace" in parameters:
        kwargs["retrace"] = True
    copies = [x.clone() if isinstance(x, probe.torch.Tensor) else x for x in inputs]
    if "arg_inputs" in parameters:
        kwargs["arg_inputs"] = copies
    else:
        kwargs["inputs"] = copies
    if exported.dynamic_shapes is not None and "dynamic_shapes" in parameters:
        kwargs["dynamic_shapes"] = exported.dynamic_shapes
    memory = _gpu_memory_query(probe.torch) if not probe.on_gpu else contextlib.nullcontext()
    with probe._block_inputs_on_cpu(), memory:
        torch_tensorrt.save(exported.module, path, **kwargs)


def count_calls(owner: Any, name: str) -> Tuple[Callable[[], int], Callable[[], None]]:
    """Counts the calls of owner.name until the returned undo is called: (count, undo)."""
    original = getattr(owner, name)
    seen = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counted)
    return (lambda: seen[0]), (lambda: setattr(owner, name, original))

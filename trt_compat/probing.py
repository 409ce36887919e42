"""What a defect's reproducer needs from the installed Torch-TensorRT, the same on every release.

A :class:`Probe` hides the differences between releases that have nothing to do with the defects: how the
post-lowering pass manager is called (``(gm, sample_inputs)`` on 2.2-2.4, ``(gm)`` on 2.5, ``(gm, settings)`` from
2.6), what the fast partitioner returns, how block inputs are built (``construct_submodule_inputs`` from 2.3,
sample runs on 2.2), and whether there is a GPU to build real engines on:

* with CUDA and TensorRT, :meth:`Probe.compile` builds real TensorRT engines and :meth:`Probe.same` compares with a
  tolerance (TensorRT may pick TF32 kernels);
* without them, it compiles with ``dryrun``: Torch-TensorRT's whole Python compiler runs, the accelerated blocks
  stay PyTorch graphs, and outputs must equal eager bit for bit. 2.2-2.4 move things to CUDA on the way even then
  (their constant folding calls ``.cuda()`` on folded constants, their compile moves sample inputs to the target
  device, and dryrun runs each block once on ``cuda:0`` to learn its output shapes), and from 2.5 the decompositions
  of empty tensors put them on ``cuda:0``; without a GPU, for the duration of the compile only, those stay on the CPU
  (as does the full 2.5's replace_full_like_with_full builds). 2.12.1's and 2.14.0's compile_module moves each block
  left to PyTorch to the target device (``submodule.to(settings.device)``) inside the backend's fake mode: on a GPU
  the model is already there and ``.to`` returns the same tensors, but a CPU model's constants would become fake
  tensors on ``cuda:0`` and the block would fail when it runs (``Please convert all Tensors to FakeTensors
  first``: transformers' GPT-2, Llama, Mistral, T5 with their default cache and mask); the CPU target device keeps
  that ``.to`` a no-op here too. 2.10.0's dryrun calls an engine module's
  ``set_output_tensors_as_unowned`` on blocks that are still GraphModules (no engine is built); for the compile's
  duration a GraphModule accepts that call and does nothing, as there is no engine whose output buffers could be lent.

The export path (:meth:`Probe.compile_exported`: ``torch.export.export`` then ``torch_tensorrt.dynamo.compile``) gets
the same treatment, and from 2.7 its compile asks for the free GPU memory (``torch.cuda.mem_get_info``) even in
dryrun; without a GPU that query answers "all free" for the compile's duration. :meth:`Probe.serve` runs what
``torch_tensorrt.save`` wrote in a fresh interpreter that imports torch_tensorrt but never trt_compat, as a serving
process does: a program compiled with trt_compat must run there with the same numbers.

Imports torch and torch_tensorrt when used, never at import.
"""

import contextlib
import functools
import importlib.util
import inspect
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ._errors import NotApplicable

__all__ = ["Probe", "Compiled", "Exported", "Served", "ServingError", "NotApplicable"]


@dataclass
class Compiled:
    """A model compiled by the ``torch.compile`` backend: its first output and what the compiler produced."""

    output: Any
    module: Callable  # the torch.compile'd model, to call again
    partitioned: Any  # the module Torch-TensorRT's compile_module returned
    blocks: List[str] = field(default_factory=list)  # names of the accelerated (TensorRT) blocks
    torch_ops: List[str] = field(default_factory=list)  # ops left to run in PyTorch blocks

    def __call__(self, *inputs: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.module(*inputs)


@dataclass
class Exported:
    """A model compiled through the export path: its first output and what the compiler produced."""

    output: Any  # the first call's output, on the inputs it was compiled with
    module: Callable  # what torch_tensorrt.dynamo.compile returned, to call again
    program: Any  # the ExportedProgram torch.export made of the model
    blocks: List[str] = field(default_factory=list)  # names of the accelerated (TensorRT) blocks
    torch_ops: List[str] = field(default_factory=list)  # ops left to run in PyTorch blocks
    saved: Optional[str] = None  # what torch_tensorrt.save wrote before the first call (compile_exported(save=True))
    save_error: Optional[BaseException] = None  # what torch_tensorrt.save raised instead
    _folder: Any = field(default=None, repr=False)  # keeps the saved file's temporary folder alive

    def __call__(self, *inputs: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.module(*inputs)


@dataclass
class Served:
    """What the saved program did in a fresh serving process (one that never imported trt_compat), call by call."""

    outputs: List[Any]
    arguments: List[tuple]  # each call's arguments after the call (an in-place update of an input shows here)
    buffers: List[Dict[str, Any]]  # the loaded module's buffers after each call


class ServingError(RuntimeError):
    """The saved program could not be loaded or run in the serving process; the message has that process's error."""


class Probe:
    """The installed Torch-TensorRT, seen through what defect reproducers need."""

    def __init__(self) -> None:
        import torch
        import torch_tensorrt

        from ._detect import release_of

        self.torch = torch
        self.torch_tensorrt = torch_tensorrt
        self.release: Tuple[int, ...] = release_of(getattr(torch_tensorrt, "__version__", None)) or (0, 0, 0)
        self.on_gpu = bool(torch.cuda.is_available()) and not getattr(
            _tensorrt_module(), "IS_TRT_COMPAT_HARNESS_STANDIN", False
        )

    # -- the torch.compile backend ----------------------------------------------------------------------------
    @property
    def has_dryrun(self) -> bool:
        from torch_tensorrt.dynamo import CompilationSettings

        return "dryrun" in getattr(CompilationSettings, "__dataclass_fields__", {})

    def _where_to_compile(self, model: Any, inputs: tuple, options: Dict[str, Any]) -> Tuple[Any, tuple, dict]:
        """The model and inputs on the GPU with engines built, or as they are with ``dryrun``; the compile's settings
        (one accelerated block is enough, and a failing build raises instead of falling back to PyTorch)."""
        if not self.on_gpu and not self.has_dryrun:
            raise NotApplicable(f"torch-tensorrt {_text(self.release)} has no dryrun option and there is no GPU")
        settings = {"min_block_size": 1, "pass_through_build_failures": True, **options}
        if self.on_gpu:
            return model.cuda(), tuple(_to_cuda(x) for x in inputs), settings
        return model, inputs, {**settings, "dryrun": True}

    def compile(self, model: Any, *inputs: Any, dynamic: Optional[bool] = None, **options: Any) -> Compiled:
        """``torch.compile(model, backend="torch_tensorrt", dynamic=dynamic)`` called once on ``inputs``; raises what
        the backend raised (never falls back to eager silently: ``pass_through_build_failures``)."""
        torch = self.torch
        from torch_tensorrt.dynamo.backend import backends

        model, inputs, settings = self._where_to_compile(model, inputs, options)
        produced: List[Any] = []
        torch._dynamo.reset()
        with _spy(backends, "compile_module", produced), self._block_inputs_on_cpu():
            compiled = torch.compile(model, backend="torch_tensorrt", options=settings, dynamic=dynamic)
            try:
                with torch.no_grad():
                    output = compiled(*inputs)
            except torch._dynamo.exc.BackendCompilerFailed as exc:
                raise exc.inner_exception from None
        if not produced:
            raise RuntimeError("torch_tensorrt's compile_module never ran (the backend fell back to eager)")
        partitioned = produced[-1]
        return Compiled(
            output,
            compiled,
            partitioned,
            [name for name, _ in self.accelerated_blocks(partitioned)],
            _torch_ops(partitioned),
        )

    # -- the export path ------------------------------------------------------------------------------------------
    def compile_exported(
        self, model: Any, *inputs: Any, dynamic_shapes: Any = None, save: bool = False, **options: Any
    ) -> Exported:
        """``torch.export.export`` then ``torch_tensorrt.dynamo.compile(program, arg_inputs=inputs)``, called once on
        ``inputs``; raises what the compiler raised. With ``save=True`` the compiled module is also written with
        ``torch_tensorrt.save`` before that first call (so the file holds the state the model was compiled with),
        for :meth:`serve`."""
        torch = self.torch
        compile_exported = self.torch_tensorrt.dynamo.compile
        model, inputs, settings = self._where_to_compile(model, inputs, options)
        program = torch.export.export(model, tuple(inputs), dynamic_shapes=dynamic_shapes)
        # The sample inputs' keyword is arg_inputs from 2.5 (inputs before), which later releases still accept.
        keyword = "arg_inputs" if "arg_inputs" in inspect.signature(compile_exported).parameters else "inputs"
        produced: List[Any] = []
        compiler = importlib.import_module("torch_tensorrt.dynamo._compiler")
        # Copies as the sample inputs: the compile describes them, and must not reach the caller's tensors (2.3-2.4's
        # dryrun runs the graph on them, which without a GPU would be these very tensors).
        samples = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
        with _spy(compiler, "compile_module", produced), self._block_inputs_on_cpu(), self._free_gpu_memory():
            module = compile_exported(program, **{keyword: samples}, **settings)
        partitioned = produced[-1] if produced else module
        exported = Exported(
            None,
            module,
            program,
            [name for name, _ in self.accelerated_blocks(partitioned)],
            _torch_ops(partitioned),
        )
        if save:
            exported._folder = tempfile.TemporaryDirectory(prefix="trt_compat_serve_")
            path = os.path.join(exported._folder.name, "program.ep")
            try:
                with self._block_inputs_on_cpu():
                    self._save(module, path, inputs)
                exported.saved = path
            except Exception as exc:  # reported by serve(), so that the compile itself can still be looked at
                exported.save_error = exc
        exported.output = exported(*inputs)
        return exported

    def _save(self, module: Any, path: str, inputs: Sequence[Any]) -> None:
        """``torch_tensorrt.save(module, path, arg_inputs=inputs)``, as a deployment writes its program. Without a GPU,
        releases whose default exporter needs built engines (``retrace=False`` up to 2.5: it reads each TensorRT
        module's engine) retrace the module with ``torch.export`` instead (``retrace=True``), the default from 2.6."""
        save = self.torch_tensorrt.save
        parameters = inspect.signature(save).parameters
        keyword = "arg_inputs" if "arg_inputs" in parameters else "inputs"
        extra = {}
        if not self.on_gpu and "retrace" in parameters and parameters["retrace"].default is False:
            extra["retrace"] = True
        save(module, path, **{keyword: list(inputs)}, **extra)

    def serve(self, exported: Exported, calls: Sequence[Sequence[Any]], timeout: float = 600) -> Served:
        """Load ``exported.saved`` with ``torch_tensorrt.load(...).module()`` in a fresh interpreter that imports
        torch_tensorrt but never trt_compat, call it with each argument list of ``calls`` in turn, and return what it
        gave. :class:`ServingError` when the program was not saved, or could not be loaded or run there."""
        if exported.saved is None:
            error = exported.save_error
            raise ServingError(
                "the compiled module was not saved"
                + (f": torch_tensorrt.save raised {type(error).__name__}: {error}" if error is not None else "")
            )
        torch = self.torch
        folder = os.path.dirname(exported.saved)
        calls_file, served_file = os.path.join(folder, "calls.pt"), os.path.join(folder, "served.pt")
        torch.save([list(call) for call in calls], calls_file)
        done = subprocess.run(
            [sys.executable, "-c", _SERVING_PROCESS, exported.saved, calls_file, served_file, _serving_prelude()],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={key: value for key, value in os.environ.items() if not key.startswith("TRT_COMPAT_")},
        )
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise ServingError(f"the serving process failed (exit {done.returncode}): " + "\n".join(lines[-15:]))
        served = torch.load(served_file, weights_only=True)
        return Served(served["outputs"], [tuple(a) for a in served["arguments"]], served["buffers"])

    @contextlib.contextmanager
    def _free_gpu_memory(self) -> Iterator[None]:
        """From 2.7 ``dynamo.compile`` asks how much GPU memory is free before building engines, in dryrun too."""
        if self.on_gpu:
            yield
            return
        cuda = self.torch.cuda
        original = cuda.mem_get_info
        cuda.mem_get_info = lambda *args, **kwargs: (_NO_GPU_MEMORY, _NO_GPU_MEMORY)
        try:
            yield
        finally:
            cuda.mem_get_info = original

    @contextlib.contextmanager
    def _block_inputs_on_cpu(self) -> Iterator[None]:
        if self.on_gpu:
            yield
            return
        torch = self.torch
        compiler = importlib.import_module("torch_tensorrt.dynamo._compiler")
        # From 2.5 the decompositions of empty tensors (empty_strided, empty_permuted) put them on the default
        # device, cuda:0, where the rest of the traced graph is: here that is the CPU.
        decompositions = importlib.import_module("torch_tensorrt.dynamo.lowering._decompositions")
        # 2.5's replace_full_like_with_full gives the full it builds the default device, cuda:0, likewise.
        full_like = _module_or_none("torch_tensorrt.dynamo.lowering.passes.replace_full_like_with_full")
        saved = [(torch.Tensor, "cuda", torch.Tensor.cuda)]
        saved += [
            (owner, name, getattr(owner, name))
            for owner, name in (
                (compiler, "get_torch_inputs"),
                (compiler, "to_torch_device"),
                (decompositions, "to_torch_device"),
                (full_like, "to_torch_device"),
            )
            if owner is not None and hasattr(owner, name)
        ]
        original_inputs = getattr(compiler, "get_torch_inputs", None)

        def inputs_on_cpu(inputs: Any, device: Any, *args: Any, **kwargs: Any) -> Any:
            return original_inputs(inputs, "cpu", *args, **kwargs)

        torch.Tensor.cuda = lambda tensor, *args, **kwargs: tensor
        if original_inputs is not None:
            compiler.get_torch_inputs = inputs_on_cpu
        for owner in (compiler, decompositions, full_like):
            if owner is not None and hasattr(owner, "to_torch_device"):
                owner.to_torch_device = lambda *args, **kwargs: torch.device("cpu")
        # 2.10.0's compile_module tells every block whose output is a graph output not to own its output tensors, a
        # method of the engine module; in dryrun no engine is built and the block is still a GraphModule.
        graph_module = torch.fx.GraphModule
        lends_outputs = "set_output_tensors_as_unowned" not in vars(graph_module)
        if lends_outputs:
            graph_module.set_output_tensors_as_unowned = lambda module, enabled: None
        try:
            yield
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)
            if lends_outputs:
                del graph_module.set_output_tensors_as_unowned

    def same(self, actual: Any, expected: Any) -> Optional[str]:
        """None when ``actual`` equals ``expected`` (bit for bit in dryrun, NaN equal to NaN; within 1e-2 on a GPU),
        else what differs."""
        torch = self.torch
        got, want = _leaves(actual), _leaves(expected)
        if len(got) != len(want):
            return f"{len(got)} outputs instead of {len(want)}"
        for index, (a, b) in enumerate(zip(got, want)):
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
                if a != b:
                    return f"output {index} is {a!r} instead of {b!r}"
                continue
            a = a.detach().cpu()
            if a.shape != b.shape or a.dtype != b.dtype:
                return f"output {index} is {_tensor(a)} instead of {_tensor(b)}"
            if self.on_gpu and a.is_floating_point():
                if torch.allclose(a, b, rtol=1e-2, atol=1e-2, equal_nan=True):
                    continue
            elif torch.equal(a, b) or (a.is_floating_point() and bool(((a == b) | (a.isnan() & b.isnan())).all())):
                continue
            difference = (a.double() - b.double()).abs().nan_to_num(nan=float("inf")).max().item()
            return f"output {index} differs from eager by up to {difference:g}"
        return None

    # -- the export path, lowering and partitioning --------------------------------------------------------------
    def export_and_lower(self, model: Any, *inputs: Any) -> Any:
        """The graph ``torch_tensorrt.dynamo.compile`` partitions: exported, decomposed, lowered."""
        from torch_tensorrt.dynamo import lowering

        program = self.torch.export.export(model, tuple(inputs))
        gm = program.run_decompositions(lowering.get_decompositions(False)).module()
        post_lowering = getattr(lowering, "post_lowering", None) or lowering.apply_lowering_passes  # 2.2.0's name
        parameters = list(inspect.signature(post_lowering).parameters)
        if len(parameters) == 1:
            return post_lowering(gm)
        if parameters[1] == "settings":
            from torch_tensorrt.dynamo import CompilationSettings

            return post_lowering(gm, CompilationSettings())
        return post_lowering(gm, list(inputs))

    def partition(self, gm: Any, torch_executed_ops: Sequence[str] = (), min_block_size: int = 1) -> Any:
        """The fast partitioner's module (2.3+ also return the supported-ops record, 2.2 only the module)."""
        from torch_tensorrt.dynamo import partitioning

        result = partitioning.fast_partition(
            gm, min_block_size=min_block_size, torch_executed_ops=set(torch_executed_ops)
        )
        return result[0] if isinstance(result, tuple) else result

    @staticmethod
    def accelerated_blocks(partitioned: Any) -> List[Tuple[str, Any]]:
        return [(name, module) for name, module in partitioned.named_children() if "_run_on_acc" in name]

    def block_inputs(self, partitioned: Any, block: Any, *inputs: Any) -> List[Tuple[tuple, Any]]:
        """(shape, dtype) of each Input the release builds for an accelerated block, the way its compiler does."""
        from torch_tensorrt.dynamo import partitioning

        if hasattr(partitioning, "construct_submodule_inputs"):
            return [
                (tuple(i.shape), i.dtype.to(self.torch.dtype)) for i in partitioning.construct_submodule_inputs(block)
            ]
        # 2.2.0 runs the parent module on sample inputs with a hook on the block.
        built = partitioning.get_submod_inputs(
            partitioned, block, self.torch_tensorrt.Input.from_tensors(list(inputs)), "cpu"
        )
        return [(tuple(i.shape), i.torch_dtype) for i in built]

    def flowing_inputs(self, partitioned: Any, *inputs: Any) -> Dict[str, List[Tuple[tuple, Any]]]:
        """(shape, dtype) of the tensors that really flow into each accelerated block when the module runs."""
        torch = self.torch
        seen: Dict[str, List[Tuple[tuple, Any]]] = {}
        handles = []
        for name, block in self.accelerated_blocks(partitioned):

            def record(_module: Any, args: Any, name: str = name) -> None:
                seen[name] = [(tuple(a.shape), a.dtype) for a in args if isinstance(a, torch.Tensor)]

            handles.append(block.register_forward_pre_hook(record))
        try:
            with torch.no_grad():
                partitioned(*inputs)
        finally:
            for handle in handles:
                handle.remove()
        return seen

    def block_input_problem(self, partitioned: Any, *inputs: Any) -> Optional[str]:
        """None when every accelerated block's Inputs describe the tensors that flow into it, else what is wrong
        (including the error upstream raised while building them)."""
        try:
            built = {
                name: self.block_inputs(partitioned, block, *inputs)
                for name, block in self.accelerated_blocks(partitioned)
            }
        except Exception as exc:
            return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        flowing = self.flowing_inputs(partitioned, *inputs)
        for name, described in built.items():
            if described != flowing.get(name, []):
                return f"{name}: Inputs {described}, but {flowing.get(name, [])} flow into it"
        return None


def _module_or_none(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# What mem_get_info answers for the compile's duration without a GPU: 16 GiB free of 16 GiB.
_NO_GPU_MEMORY = 1 << 34

# The serving process: argv = saved program, calls file, result file, prelude (code run before torch_tensorrt is
# imported). It must never import trt_compat, and says so if something did.
_SERVING_PROCESS = textwrap.dedent(
    """
    import sys

    saved, calls_file, served_file, prelude = sys.argv[1:5]
    exec(prelude)
    import torch
    import torch_tensorrt
    from torch.utils._pytree import tree_map

    module = torch_tensorrt.load(saved).module()
    outputs, arguments, buffers = [], [], []
    with torch.no_grad():
        for call in torch.load(calls_file, weights_only=True):
            # Copies: an output may be a buffer itself (a model returning what it updates), which the next call changes.
            outputs.append(tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, module(*call)))
            arguments.append([a.clone() if isinstance(a, torch.Tensor) else a for a in call])
            buffers.append({name: b.clone() for name, b in module.named_buffers()})
    if "trt_compat" in sys.modules:
        sys.exit("the serving process imported trt_compat")
    torch.save({"outputs": outputs, "arguments": arguments, "buffers": buffers}, served_file)
    """
)


def _serving_prelude() -> str:
    """Code a fresh interpreter runs before importing torch_tensorrt, so that it imports as this one did.

    Nothing on a machine with TensorRT. Under a test stand-in of the ``tensorrt`` module, the stand-in names the
    function that prepared this process (``PREPARE_PROCESS``: module, function, folder to import it from), which the
    serving process runs too.
    """
    module = _tensorrt_module()
    if not getattr(module, "IS_TRT_COMPAT_HARNESS_STANDIN", False):
        return ""
    prepare = getattr(module, "PREPARE_PROCESS", None)
    if prepare is None:
        return ""
    name, function, folder = prepare
    return f"sys.path.insert(0, {folder!r}); import importlib; importlib.import_module({name!r}).{function}()"


def _tensorrt_module() -> Any:
    import sys

    module = sys.modules.get("tensorrt")
    return getattr(module, "_target_module", module)  # 2.12+ put a proxy in front of the module


def _text(release: Tuple[int, ...]) -> str:
    return ".".join(map(str, release))


def _to_cuda(value: Any) -> Any:
    return value.cuda() if hasattr(value, "cuda") else value


def _leaves(value: Any) -> List[Any]:
    from torch.utils._pytree import tree_leaves

    return tree_leaves(value)


def _tensor(t: Any) -> str:
    from .describe import value

    return value(t)


@contextlib.contextmanager
def _spy(owner: Any, name: str, produced: List[Any]) -> Iterator[None]:
    original = getattr(owner, name)

    @functools.wraps(original)
    def spy(*args: Any, **kwargs: Any) -> Any:
        produced.append(original(*args, **kwargs))
        return produced[-1]

    setattr(owner, name, spy)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _torch_ops(partitioned: Any) -> List[str]:
    """The ops of the blocks left to run in PyTorch (and of the top-level graph), sorted."""
    from .describe import op_name

    ops = []
    for name, module in partitioned.named_children():
        graph = getattr(module, "graph", None)
        if "_run_on_acc" in name or graph is None:
            continue
        ops += [op_name(node) for node in graph.nodes if node.op in ("call_function", "call_method")]
    return sorted(ops)


def decomposes(op: Any) -> bool:
    """Whether the installed Torch-TensorRT registers a decomposition of its own for ``op``."""
    from .patching import DECOMPOSITIONS_MODULE, DECOMPOSITIONS_TABLE

    module = importlib.import_module(DECOMPOSITIONS_MODULE)
    return op in getattr(module, DECOMPOSITIONS_TABLE, {})


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False

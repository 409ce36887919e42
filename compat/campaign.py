"""Differential campaign: compile many models with the installed Torch-TensorRT, without and with trt_compat, compare
every result with eager PyTorch bit for bit, and name the graph pass behind each difference (the value audit).

Run with a release's harness venv, from the repository root:

    .venvs/tt-2.14.0/bin/python -m compat.campaign --out compat/differential
    .venvs/tt-2.14.0/bin/python -m compat.campaign --models generated,smoke,reproducers --generated 200
    .venvs/tt-2.14.0/bin/python -m compat.campaign --models resnet18,gen-0017 --print

Each model is compiled in dryrun on two paths (``torch.compile(backend="torch_tensorrt")`` through
trt_compat.probing.Probe, which handles the releases' differences, and ``torch.export`` -> ``torch_tensorrt.dynamo.
compile``, then saved and reloaded in fresh processes) with static and dynamic shapes (compat/variants.py), three
calls each: first with every trt_compat patch reverted, then with the patches applied; a side whose result differs
from eager is measured again with the value audit on. Per side it records
whether it compiled (else the error's first line), the largest absolute difference to eager over the outputs and
the final contents of the inputs and buffers (0.0 is bit-exact: NaN equals NaN, the sign of zero counts), the
number of TensorRT blocks, and the value audit's findings (attributed bit for bit: the audit's tolerances are
off here, so rounding is named too). Results are merged into ``<out>/<release>.json`` by model name, so the parts
can run separately; ``python -m compat.make_differential`` renders and triages them (compat/DIFFERENTIAL.md).

Model families (``--models`` takes families and model names, comma-separated; default: all):

* ``torchvision``: classification and segmentation models at small input sizes, random weights (never downloaded);
* ``smoke``: the compatibility matrix's smoke models (tests/helpers/models.py);
* ``reproducers``: the patches' reproducer models (those whose patch is in this checkout);
* ``probes``: models written for the campaign, each aimed at one pass (:data:`PROBES`);
* ``generated``: ``--generated N`` seeded random graphs (:mod:`compat.generated`), the same every run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from compat.variants import NotRunnable

REPO = Path(__file__).resolve().parent.parent
FAMILIES = ("torchvision", "timm", "transformers", "smoke", "reproducers", "probes", "generated")
# Findings kept per side: the first is the one that matters; a few more show whether later passes add to it.
FINDINGS_KEPT = 5
# Saved programs reloaded per pair of fresh processes (without and with trt_compat).
RELOAD_BATCH = 25

# name -> (family, builder(torchvision) -> model, input shape). Sizes: the smallest each model accepts, so a release
# costs minutes on two CPU cores. Segmentation models without their (downloaded) pretrained backbones.
TORCHVISION: Dict[str, Tuple[str, Callable[[Any], Any], Tuple[int, ...]]] = {
    "resnet18": ("classification", lambda tv: tv.models.resnet18(weights=None), (1, 3, 64, 64)),
    "mobilenet_v3_small": ("classification", lambda tv: tv.models.mobilenet_v3_small(weights=None), (1, 3, 64, 64)),
    "squeezenet1_1": ("classification", lambda tv: tv.models.squeezenet1_1(weights=None), (1, 3, 64, 64)),
    "googlenet": (
        "classification",
        lambda tv: tv.models.googlenet(weights=None, aux_logits=False, init_weights=True),
        (1, 3, 64, 64),
    ),
    "densenet121": ("classification", lambda tv: tv.models.densenet121(weights=None), (1, 3, 64, 64)),
    "efficientnet_b0": ("classification", lambda tv: tv.models.efficientnet_b0(weights=None), (1, 3, 64, 64)),
    "shufflenet_v2_x0_5": ("classification", lambda tv: tv.models.shufflenet_v2_x0_5(weights=None), (1, 3, 64, 64)),
    "regnet_y_400mf": ("classification", lambda tv: tv.models.regnet_y_400mf(weights=None), (1, 3, 64, 64)),
    # 32x32: two patches per side; the encoder (12 layers, 86 M parameters) is what is compiled either way.
    "vit_b_16": ("classification", lambda tv: tv.models.vit_b_16(weights=None, image_size=32), (1, 3, 32, 32)),
    "swin_t": ("classification", lambda tv: tv.models.swin_t(weights=None), (1, 3, 64, 64)),
    "fcn_resnet50": (
        "segmentation",
        lambda tv: tv.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=4),
        (1, 3, 64, 64),
    ),
    "deeplabv3_mobilenet_v3_large": (
        "segmentation",
        lambda tv: tv.models.segmentation.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=4
        ),
        (1, 3, 64, 64),
    ),
    "lraspp_mobilenet_v3_large": (
        "segmentation",
        lambda tv: tv.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4),
        (1, 3, 64, 64),
    ),
}

# The patches' reproducer models: (patch module, class, input). A patch not in this checkout is reported, not run.
REPRODUCERS: Dict[str, Tuple[str, str, Callable[[Any], Any]]] = {
    "three_views": ("view_to_reshape_metadata", "ThreeViews", lambda torch: torch.randn(2, 3, 4)),
    "conv_ceil_pool": ("tuple_partition_inputs", "ConvCeilPool", lambda torch: torch.randn(1, 3, 16, 16)),
    "pool_indices_views": ("tuple_pooling", "PoolIndicesViews", lambda torch: torch.randn(1, 3, 16, 16)),
    "clone_then_scale": ("keep_identity_ops", "CloneThenScale", lambda torch: torch.randn(2, 3)),
    "contiguous_view_attention": (
        "keep_identity_ops",
        "ContiguousViewAttention",
        lambda torch: torch.linspace(-1.0, 1.0, 64).view(2, 4, 8),
    ),
    "add_to_input": ("keep_input_mutations", "AddToInput", lambda torch: torch.randn(2, 3)),
    "step_counter": ("keep_input_mutations", "StepCounter", lambda torch: torch.randn(2, 3)),
    "kv_cache_write": ("keep_input_mutations", "KVCacheWrite", lambda torch: torch.arange(3.0) + 1),
    "scale_by_sum": ("fold_only_constants", "ScaleBySum", lambda torch: torch.randn(2, 3)),
    "scatter_then_contiguous": (
        "keep_scatter_layout",
        "ScatterThenContiguous",
        lambda torch: torch.linspace(-1.0, 1.0, 504).view(2, 4, 9, 7),
    ),
    "wrapping_counts": ("keep_empty_strided_dtype", "WrappingCounts", lambda torch: torch.ones(3, 3)),
    "causal_attention": (
        "keep_empty_strided_dtype",
        "CausalAttention",
        lambda torch: torch.linspace(-1.0, 1.0, 504).view(2, 4, 9, 7),
    ),
    "ceil_and_dilated_pools": ("convertible_pools", "_CeilAndDilatedPools", lambda torch: torch.randn(1, 3, 16, 16)),
}


class Case:
    """One model of the campaign: builds a fresh, seeded (model, inputs) pair every time it is asked."""

    def __init__(self, name: str, family: str, build: Callable[[], Tuple[Any, tuple]], note: str = ""):
        self.name, self.family, self.build, self.note = name, family, build, note
        self.scalar_capture = False  # torch._dynamo.config.capture_scalar_outputs while it compiles
        # The dynamic axes (compat.variants.Dynamic); None: dim 0 of the inputs that share the first one's batch.
        self.dynamic: Any = None
        # Inputs of call k (1, 2) from those of call k - 1 as they are after it; None: new values (static shapes) or
        # the next size of each dynamic axis (dynamic shapes). A case whose calls change shape even with static
        # shapes (prefill, then decode) sets shape_changes: the static export path cannot take it.
        self.next_inputs: Optional[Callable[[str, int, tuple], tuple]] = None
        self.shape_changes = False
        self.compare_buffers = True  # False: the model's buffers are not state a call leaves (caches handled apart)
        self.dynamic_true = False  # dynamic shapes on the compile path: torch.compile(dynamic=True), not mark_dynamic

    def dynamic_axes(self, inputs: tuple) -> Any:
        from compat import variants

        return self.dynamic if self.dynamic is not None else variants.batch_axis(inputs)

    def prepared(self, shapes: str) -> Tuple[Any, tuple, Any]:
        """(model, the first call's inputs, dynamic axes or None) for static or dynamic shapes."""
        from compat import variants

        model, inputs = self.build()
        if shapes == "static":
            return model, inputs, None
        dynamic = self.dynamic_axes(inputs)
        if dynamic is None:
            raise NotRunnable("no input with a dimension to make dynamic")
        if self.next_inputs is not None:
            return model, inputs, dynamic
        return model, variants.resized(inputs, dynamic, 0, seed=20_250), dynamic

    def following(self, shapes: str, call: int, inputs: tuple, dynamic: Any) -> tuple:
        """The inputs of call ``call`` (1 or 2, counting from 0), from the previous call's inputs after it."""
        from compat import variants

        if self.next_inputs is not None:
            return self.next_inputs(shapes, call, inputs)
        if shapes == "static":
            return second_inputs(inputs, seed=20_251 + call - 1)
        return variants.resized(inputs, dynamic, call, seed=20_250 + call)


# -- the models ---------------------------------------------------------------------------------------------------
def torchvision_cases() -> List[Case]:
    import torch

    try:
        import torchvision
    except ImportError:
        return []

    def builder(make: Callable[[Any], Any], shape: Tuple[int, ...]) -> Callable[[], Tuple[Any, tuple]]:
        def build() -> Tuple[Any, tuple]:
            torch.manual_seed(0)
            model = make(torchvision).eval()
            return model, (torch.randn(*shape),)

        return build

    return [
        Case(name, f"torchvision {kind}", builder(make, shape), f"input {list(shape)}")
        for name, (kind, make, shape) in TORCHVISION.items()
    ]


def smoke_cases() -> List[Case]:
    from tests.helpers.models import SMOKE_MODELS, smoke_model

    return [Case(name, "smoke", lambda name=name: _as_inputs(smoke_model(name))) for name in SMOKE_MODELS]


def _as_inputs(pair: Tuple[Any, Any]) -> Tuple[Any, tuple]:
    model, x = pair
    return model, (x,)


def reproducer_cases() -> List[Case]:
    import torch

    from trt_compat import _discovery

    # Discovery, not an import: an editable install elsewhere may make patch modules importable that this
    # checkout does not have.
    present = {found.name for found in _discovery.discover()}
    cases = []
    for name, (module_name, class_name, make_input) in REPRODUCERS.items():
        if module_name not in present:
            print(f"campaign: {name} skipped: patch {module_name} is not in this checkout", file=sys.stderr)
            continue

        def build(module_name: str = module_name, class_name: str = class_name, make_input: Any = make_input):
            module = importlib.import_module(f"trt_compat.patches.{module_name}")
            torch.manual_seed(0)
            return getattr(module, class_name)().eval(), (make_input(torch),)

        cases.append(Case(name, f"reproducer ({module_name})", build))
    return cases


def scale_by_input_item(through: str = "") -> Any:
    """``x * s.item()`` of a graph input ``s`` (``s.<through>().item()`` if given); with ``capture_scalar_outputs``
    the ``.item()`` stays in the graph."""
    import torch

    class ScaleByInputItem(torch.nn.Module):
        def forward(self, x: Any, s: Any) -> Any:
            return x * (getattr(s, through)() if through else s).item()

    return ScaleByInputItem()


# Models written for the campaign, aimed at one pass each: name -> (what, builder(torch) -> (model, inputs)).
PROBES: Dict[str, Tuple[str, Callable[[Any], Tuple[Any, tuple]]]] = {
    "input_item": (
        "x * s.item() of a graph input s (fold_get_attr_item_calls, 2.12+)",
        lambda torch: (scale_by_input_item(), (torch.randn(2, 3), torch.tensor(2.0))),
    ),
    "input_clone_item": (
        "x * s.clone().item() of a graph input s",
        lambda torch: (scale_by_input_item("clone"), (torch.randn(2, 3), torch.tensor(2.0))),
    ),
}


def _ceil_pool_between_convs(torch: Any) -> Tuple[Any, tuple]:
    from trt_compat.patches.tuple_partition_inputs import ConvCeilPool

    return ConvCeilPool(), (torch.randn(2, 3, 16, 16),)


def _attention_block(torch: Any) -> Tuple[Any, tuple]:
    from tests.helpers.models import smoke_model

    model, x = smoke_model("transformer_views")
    return model, (x,)


# Compiled with torch.compile(..., dynamic=True) in their dynamic variant (every size symbolic and unbounded), not
# mark_dynamic with bounds: the sizes after a ceil-mode pool or an attention reshape are expressions without an upper
# bound, and the SymInt inputs dynamic=True adds are used by the graph.
DYNAMIC_TRUE_PROBES: Dict[str, Tuple[str, Callable[[Any], Tuple[Any, tuple]]]] = {
    "dynamic_true_ceil_pool": ("conv, MaxPool2d(3, 2, ceil_mode=True), conv; dynamic=True", _ceil_pool_between_convs),
    "dynamic_true_attention": ("pre-norm transformer block (view/transpose attention); dynamic=True", _attention_block),
}


def probe_cases() -> List[Case]:
    import torch

    cases = []
    for name, (what, make) in {**PROBES, **DYNAMIC_TRUE_PROBES}.items():
        case = Case(name, "probes", lambda make=make: _seeded(make, torch), what)
        case.scalar_capture = name in PROBES
        case.dynamic_true = name in DYNAMIC_TRUE_PROBES
        cases.append(case)
    return cases


def _seeded(make: Callable[[Any], Tuple[Any, tuple]], torch: Any) -> Tuple[Any, tuple]:
    torch.manual_seed(0)
    model, inputs = make(torch)
    return model.eval(), inputs


def generated_cases(count: int, seed: int) -> List[Case]:
    from compat import generated

    cases = []
    for index in range(count):
        spec = generated.describe(seed, index)
        case = Case(spec.name, "generated", lambda index=index: generated.build(seed, index), spec.text)
        case.scalar_capture = spec.scalar_capture
        cases.append(case)
    return cases


def select(chosen: List[str], count: int, seed: int) -> List[Case]:
    """The cases named by families and model names; a name that is neither is an error."""
    from compat import families

    available: Dict[str, List[Case]] = {
        "torchvision": torchvision_cases(),
        "timm": families.cases_of("timm", Case),
        "transformers": families.cases_of("transformers", Case),
        "smoke": smoke_cases(),
        "reproducers": reproducer_cases(),
        "probes": probe_cases(),
        "generated": generated_cases(count, seed),
    }
    by_name = {case.name: case for cases in available.values() for case in cases}
    picked: List[Case] = []
    for word in chosen:
        if word == "all":
            picked += [case for family in FAMILIES for case in available[family]]
        elif word in available:
            picked += available[word]
        elif word in by_name:
            picked.append(by_name[word])
        else:
            raise SystemExit(f"unknown family or model {word!r}; families: all, {', '.join(FAMILIES)}")
    unique: Dict[str, Case] = {}
    for case in picked:
        unique.setdefault(case.name, case)
    return list(unique.values())


# -- measuring ---------------------------------------------------------------------------------------------------
def _leaves(value: Any) -> List[Any]:
    from torch.utils._pytree import tree_leaves

    return tree_leaves(value)


def observed(model: Any, inputs: tuple, output: Any) -> List[Tuple[str, Any]]:
    """What a call leaves behind, named: its outputs, then its inputs' (and the model's buffers') final contents."""
    import torch

    named = [(f"output {index}", leaf) for index, leaf in enumerate(_leaves(output))]
    named += [(f"input {index}", x) for index, x in enumerate(inputs) if isinstance(x, torch.Tensor)]
    if model is not None:
        named += [(f"buffer {name}", buffer) for name, buffer in model.named_buffers()]
    return named


def compare(actual: List[Tuple[str, Any]], expected: List[Tuple[str, Any]]) -> Tuple[float, float, str]:
    """(largest absolute difference, largest difference relative to the largest finite magnitude of its value,
    where the first difference is); (0.0, 0.0, "") when bit-exact."""
    from trt_compat import audit

    if [name for name, _ in actual] != [name for name, _ in expected]:
        return math.inf, math.inf, f"{len(actual)} values instead of {len(expected)}"
    largest, relative, where = 0.0, 0.0, ""
    for (name, got), (_, want) in zip(actual, expected):
        found = audit.difference(got, want)
        if found is None:
            continue
        where = where or f"{name}: {found[1]}"
        largest = max(largest, found[0])
        relative = max(relative, found[0] / _magnitude(want) if _magnitude(want) else math.inf)
    return largest, relative, where


def _magnitude(value: Any) -> float:
    import torch

    if not isinstance(value, torch.Tensor) or not (value.is_floating_point() or value.is_complex()):
        return 0.0
    finite = value[value.isfinite()]
    return float(finite.abs().max()) if finite.numel() else 0.0


def _error(exc: BaseException) -> str:
    inner = getattr(exc, "inner_exception", None)  # a recompile's BackendCompilerFailed, raised from a later call
    if isinstance(inner, BaseException):
        return f"{type(exc).__name__}: {_error(inner)}"[:300]
    text = (str(exc).strip().splitlines() or [""])[0]
    if type(exc).__name__ == "ExportFailed":
        return text[:300]
    return f"{type(exc).__name__}: {text}"[:300]


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(*_: Any) -> None:
        raise _Timeout(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def bit_exact_audit() -> Iterator[List[Any]]:
    """The value audit on, with no tolerance for any pass: the campaign wants rounding attributed too."""
    from trt_compat import audit

    saved = dict(audit.TOLERANCES)
    audit.TOLERANCES.clear()
    try:
        with audit.auditing(audit.VALUES) as found:
            yield found
    finally:
        audit.TOLERANCES.update(saved)


def measure(
    probe: Any, case: Case, variant: Tuple[str, str], expected: List[Tuple[str, Any]], with_audit: bool, timeout: int
) -> Tuple[dict, Any]:
    """Compile ``case`` once on one path with one kind of shapes and call it three times; what it gives, compared with
    ``expected`` (eager). Also returns, on the export path, what saving needs (the compiled module and each call's
    inputs as they were before it), else None."""
    import torch

    from compat import variants
    from trt_compat import audit
    from trt_compat.probing import NotApplicable

    path, shapes = variant
    started = time.perf_counter()
    entry: Dict[str, Any] = {}
    audit_scope = bit_exact_audit() if with_audit else nullcontext([])
    scalars = torch._dynamo.config.patch(capture_scalar_outputs=True) if case.scalar_capture else nullcontext()
    backends = importlib.import_module("torch_tensorrt.dynamo.backend.backends")
    compiles, uncount = variants.count_calls(backends, "compile_module")
    saved: Any = None
    with audit_scope as found, scalars:
        stage = "compile"
        try:
            model, inputs, dynamic = case.prepared(shapes)
            with time_limit(timeout), contextlib.redirect_stdout(sys.stderr), _on_cpu(probe):
                before = [_clone(inputs)]
                if path == "compile":
                    if dynamic is not None and not case.dynamic_true:
                        variants.mark_dynamic(inputs, dynamic)
                    how = (True if case.dynamic_true else None) if dynamic is not None else False
                    compiled: Any = probe.compile(model, *inputs, dynamic=how)
                else:
                    compiled = variants.compile_exported(probe, model, inputs, dynamic)
                stage = "call 2"
                names = [name[len("buffer ") :] for name, _ in expected if name.startswith("buffer ")]
                actual, before = _calls(case, shapes, dynamic, model, inputs, compiled.output, compiled, path, names)
                saved = (compiled, before)
        except (NotApplicable, NotRunnable) as exc:
            entry.update(status="not run", error=str(exc))
        except Exception as exc:
            entry.update(status="failed", error=_error(exc) if stage == "compile" else f"{stage}: {_error(exc)}")
        else:
            difference, relative, where = compare(actual, expected)
            entry.update(
                status="ok" if difference == 0.0 and not where else "mismatch",
                max_difference=_number(difference),
                relative_difference=_number(relative),
                where=where,
                blocks=len(compiled.blocks),
            )
            if entry["status"] == "mismatch" and path == "export":
                entry["vs_decomposed"] = _against_decomposed(probe, case, shapes, actual)
        finally:
            uncount()
    if path == "compile":
        entry["compiles"] = compiles()  # the backend's compile_module calls over the three calls (recompiles)
    if with_audit:
        entry["audit"] = [_finding(f) for f in found if isinstance(f, audit.ValueFinding)][:FINDINGS_KEPT]
    entry["seconds"] = round(time.perf_counter() - started, 2)
    return entry, (saved if path == "export" and entry.get("status") in ("ok", "mismatch") else None)


def _against_decomposed(probe: Any, case: Case, shapes: str, actual: List[Tuple[str, Any]]) -> str:
    """The export path's result against the exported program with Torch-TensorRT's decompositions applied, run in
    PyTorch ("same": every value bit for bit, i.e. the difference to eager is the decompositions' own rounding, not a
    later pass; else where they first differ). The value audit does not see the export path's decompositions
    (ExportedProgram.run_decompositions is not a pass it wraps)."""
    import torch

    from compat import variants

    try:
        lowering = importlib.import_module("torch_tensorrt.dynamo.lowering")
        model, inputs, dynamic = case.prepared(shapes)
        program = torch.export.export(model, inputs, dynamic_shapes=variants.export_dynamic_shapes(inputs, dynamic))
        decomposed = program.run_decompositions(lowering.get_decompositions(False)).module()
        with torch.no_grad(), _on_cpu(probe):
            named, _ = _calls(case, shapes, dynamic, model, inputs, decomposed(*inputs), decomposed)
    except Exception as exc:
        return f"not measured: {_error(exc)}"
    outputs = [(name, value) for name, value in named if not name.startswith("buffer ")]
    compared = [(name, value) for name, value in actual if not name.startswith("buffer ")]
    difference, _, where = compare(compared, outputs)
    return "same" if difference == 0.0 and not where else where


@contextlib.contextmanager
def _on_cpu(probe: Any) -> Iterator[None]:
    """The Probe's CPU stand-ins (and a fixed answer to the GPU memory query) for the compile and all three calls: a
    recompile at the second call's shapes compiles again."""
    from compat import variants

    if probe.on_gpu:
        yield
        return
    with probe._block_inputs_on_cpu(), variants._gpu_memory_query(probe.torch):
        yield


def _clone(inputs: tuple) -> tuple:
    import torch

    return tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in inputs)


def _number(value: float) -> Any:
    return value if math.isfinite(value) else "inf"


def _finding(found: Any) -> dict:
    return {
        "pass": found.pass_name,
        "phase": found.phase,
        "what": found.what,
        "node": found.node,
        "difference": _number(found.difference),
        "detail": found.detail,
        "inputs": found.inputs,
    }


def second_inputs(inputs: tuple, seed: int = 20_251) -> tuple:
    """Other values for a later call, the same every run: floating-point tensors drawn again (with their shape and
    dtype), the rest unchanged. A compiled graph that kept a value of the first call (a folded ``.item()``, an
    update it dropped) shows on the second."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(value.shape, generator=generator).to(value.dtype)
        if isinstance(value, torch.Tensor) and value.is_floating_point()
        else (value.clone() if isinstance(value, torch.Tensor) else value)
        for value in inputs
    )


def _calls(
    case: Case,
    shapes: str,
    dynamic: Any,
    model: Any,
    inputs: tuple,
    first_output: Any,
    call: Callable[..., Any],
    path: str = "eager",
    buffers: Optional[List[str]] = None,
) -> Tuple[List[Tuple[str, Any]], List[tuple]]:
    """What three calls leave behind: each call's outputs and inputs (the first as ``first_output`` and ``inputs`` are
    now), then the model's buffers; and each call's inputs as they were before it."""
    named = [(f"call 1, {name}", value) for name, value in observed(None, inputs, first_output)]
    before = [None]
    for number in range(1, variants_calls()):
        inputs = case.following(shapes, number, inputs, dynamic)
        before.append(_clone(inputs))
        output = call(*inputs)
        named += [(f"call {number + 1}, {name}", value) for name, value in observed(None, inputs, output)]
    return named + _buffers(case, model, call, path, buffers), before


def variants_calls() -> int:
    from compat import variants

    return variants.CALLS


def _buffers(case: Case, model: Any, call: Any, path: str, names: Optional[List[str]]) -> List[Tuple[str, Any]]:
    """The model's buffers after the calls (those named, if given). On the export path the compiled module holds its
    own copies: the buffers eager changes are looked up there by name (one the compiled module no longer has is
    named as missing, not guessed); the others are constants a compiler may fold."""
    if not case.compare_buffers:
        return []
    if path != "export":
        return [(f"buffer {name}", b) for name, b in model.named_buffers() if names is None or name in names]
    held = dict(getattr(call, "module", call).named_buffers())
    return [(f"buffer {name}", held.get(name, _MissingBuffer(name))) for name in names or []]


class _MissingBuffer:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<buffer {self.name} is not in the compiled module>"


def eager(case: Case, shapes: str) -> Tuple[List[Tuple[str, Any]], List[str]]:
    """What eager PyTorch leaves after the three calls, and the names of the buffers the calls change."""
    import torch

    from trt_compat import audit

    model, inputs, dynamic = case.prepared(shapes)
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    with torch.no_grad():
        named, _ = _calls(case, shapes, dynamic, model, inputs, model(*inputs), model)
    changed = [name for name, buffer in model.named_buffers() if audit.difference(buffer, before[name]) is not None]
    return named, changed


def run_case(probe: Any, case: Case, variant: Tuple[str, str], timeout: int, saves: Optional[Saves] = None) -> dict:
    """Both sides of one model in one variant; trt_compat is left applied. On the export path the program compiled
    with trt_compat is saved into ``saves`` for the fresh-process reload."""
    import trt_compat

    path, shapes = variant
    record: Dict[str, Any] = {"family": case.family, "model": case.name, "path": path, "shapes": shapes}
    if case.note:
        record["note"] = case.note
    if path == "export" and shapes == "static" and case.shape_changes:
        record.update(status="not run", reason="its calls change shape: the static export path cannot take them")
        return record
    try:
        expected, changed = eager(case, shapes)
        if path == "export":
            expected = [(name, value) for name, value in expected if not _unchanged_buffer(name, changed)]
    except NotRunnable as exc:
        record.update(status="not run", reason=str(exc))
        return record
    except Exception as exc:
        record.update(status="not run", reason=f"eager PyTorch fails: {_error(exc)}")
        return record
    # Each side is measured without the value audit (the audit runs every pass's graph again: it dominates the cost
    # of a large model), and again with it only when the result is not bit-exact; the status is the unaudited one.
    trt_compat.revert()
    try:
        record["without"], _ = measure(probe, case, variant, expected, with_audit=False, timeout=timeout)
        if record["without"]["status"] in ("mismatch", "failed"):
            audited, _ = measure(probe, case, variant, expected, with_audit=True, timeout=timeout)
            record["without"]["audit"] = audited.get("audit", [])
    finally:
        trt_compat.apply()
    record["with"], saved = measure(probe, case, variant, expected, with_audit=False, timeout=timeout)
    record["with"]["patches"] = sorted(p.name for p in trt_compat.report().patches if p.state == "applied")
    if record["with"]["status"] in ("mismatch", "failed"):
        audited, _ = measure(probe, case, variant, expected, with_audit=True, timeout=timeout)
        record["with"]["audit"] = audited.get("audit", [])
    if saved is not None and saves is not None:
        saves.add(probe, case, variant, record, saved, expected)
    return record


def _unchanged_buffer(name: str, changed: List[str]) -> bool:
    return name.startswith("buffer ") and name[len("buffer ") :] not in changed


class Saves:
    """Programs compiled with trt_compat on the export path, saved with torch_tensorrt.save, to be loaded and called
    in fresh processes (``python -m compat.reload``) without and with trt_compat."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.pending: Dict[str, Tuple[str, List[str]]] = {}  # stem -> (record key, expected value names)
        self.saved = 0

    def add(self, probe: Any, case: Case, variant: Tuple[str, str], record: dict, saved: Any, expected: list) -> None:
        import torch

        from compat import variants

        compiled, before = saved
        self.saved += 1
        stem = f"{self.saved:04d}"
        started = time.perf_counter()
        try:
            first = case.prepared(variant[1])[1]
            with contextlib.redirect_stdout(sys.stderr):
                variants.save(probe, compiled, str(self.directory / f"{stem}.pt2"), first)
        except Exception as exc:
            # What a deployment would ship cannot be saved: both reloads fail at their first step.
            record["saved"] = {"status": "failed", "error": _error(exc)}
            for side in ("without", "with"):
                record[f"reload_{side}"] = {"status": "failed", "error": f"save: {_error(exc)}"}
            return
        calls = [_clone(first)] + [call for call in before[1:]]
        torch.save(calls, self.directory / f"{stem}.calls.pt")
        torch.save(expected, self.directory / f"{stem}.expected.pt")
        record["saved"] = {"status": "ok", "seconds": round(time.perf_counter() - started, 2)}
        self.pending[stem] = (variants.key(case.name, *variant), [name for name, _ in expected])

    def reload(self, data: dict) -> None:
        """Run the fresh processes and put their comparison with eager into the records (reload_without/_with);
        the batch's files are deleted after."""
        import os

        import torch

        if not self.pending:
            return
        try:
            self._reload(data, os, torch)
        finally:
            for stem in self.pending:
                for leftover in self.directory.glob(f"{stem}.*"):
                    leftover.unlink()
            self.pending.clear()

    def _reload(self, data: dict, os: Any, torch: Any) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        for side, flag in (("without", []), ("with", ["--with-trt-compat"])):
            command = [sys.executable, "-m", "compat.reload", str(self.directory), *flag]
            started = time.perf_counter()
            done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
            print(f"reload {side} trt_compat: exit {done.returncode} [{time.perf_counter() - started:.0f} s]")
            for stem, (name, _) in self.pending.items():
                result_path = self.directory / f"{stem}.{side}.pt"
                record = data["models"].get(name)
                if record is None:
                    continue
                if done.returncode != 0 or not result_path.exists():
                    record[f"reload_{side}"] = {"status": "failed", "error": f"reload process exit {done.returncode}"}
                    continue
                result = torch.load(result_path, weights_only=False)
                record[f"reload_{side}"] = self._compare(result, torch.load(self.directory / f"{stem}.expected.pt"))
                if side == "with":
                    record[f"reload_{side}"]["patches"] = record.get("with", {}).get("patches", [])

    @staticmethod
    def _compare(result: dict, expected: List[Tuple[str, Any]]) -> dict:
        if "error" in result:
            return {"status": "failed", "error": result["error"], "seconds": result["seconds"]}
        named = []
        for number, call in enumerate(result["calls"], start=1):
            named += [(f"call {number}, output {i}", leaf) for i, leaf in enumerate(call["outputs"])]
            named += [(f"call {number}, input {i}", x) for i, x in enumerate(call["inputs"])]
        buffers = result.get("buffers", {})
        named += [
            (name, buffers.get(name[len("buffer ") :], _MissingBuffer(name)))
            for name, _ in expected
            if name.startswith("buffer ")
        ]
        difference, relative, where = compare(named, expected)
        return {
            "status": "ok" if difference == 0.0 and not where else "mismatch",
            "max_difference": _number(difference),
            "relative_difference": _number(relative),
            "where": where,
            "seconds": result["seconds"],
        }


# -- the run ---------------------------------------------------------------------------------------------------
def prepare() -> Tuple[Any, dict]:
    """The harness, the real torch_tensorrt, trt_compat applied; the Probe and the versions."""
    from tests.harness import activate

    info = activate.prepare()
    import torch
    import torch_tensorrt  # noqa: F401

    import trt_compat
    from trt_compat.probing import Probe

    trt_compat.apply()
    probe = Probe()
    if probe.release < (2, 5, 0):
        # Upstream constant folding calls .cuda() on 2.2-2.4 (HARNESS-NOTES): kept on the CPU, with and without
        # trt_compat alike.
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        compiler = importlib.import_module("torch_tensorrt.dynamo._compiler")
        if hasattr(compiler, "to_torch_device"):
            compiler.to_torch_device = lambda *args, **kwargs: torch.device("cpu")
    versions = {
        "torch_tensorrt": info["wheel"],
        "torch": torch.__version__,
        "torchvision": _version_of("torchvision"),
        "trt_compat": trt_compat.__version__,
    }
    return probe, versions


def _version_of(distribution: str) -> Optional[str]:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _commit() -> str:
    """HEAD, "+changes" when the code measured (trt_compat, patches, this campaign, the test models) differs from it;
    results files do not count (the matrix rewrites them while it runs)."""
    code = ["trt_compat", "patches", "compat/campaign.py", "compat/generated.py", "compat/variants.py"]
    code += ["compat/families.py", "compat/reload.py", "tests/helpers"]
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *code],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "compat" / "differential")
    parser.add_argument("--models", default="all", help="families and model names, comma-separated")
    parser.add_argument("--paths", default="compile,export", help="compile, export or both (default both)")
    parser.add_argument("--shapes", default="static,dynamic", help="static, dynamic or both (default both)")
    parser.add_argument("--generated", type=int, default=200, help="how many generated graphs (default 200)")
    parser.add_argument(
        "--generated-variants",
        type=int,
        default=None,
        help="how many of them also go through the other paths and shapes (default: as many)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated graphs (default 0)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per compile before it counts as failed")
    parser.add_argument("--no-reload", action="store_true", help="export path: no save and fresh-process reload")
    parser.add_argument("--print", action="store_true", help="print each record as it is measured")
    args = parser.parse_args(argv)

    from compat import variants

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("torch.__trace").propagate = False
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model libraries build from configs; nothing is downloaded
    probe, versions = prepare()
    chosen = [word.strip() for word in args.models.split(",") if word.strip()]
    cases = select(chosen, args.generated, args.seed)
    paths = [word for word in args.paths.split(",") if word]
    shapes_chosen = [word for word in args.shapes.split(",") if word]
    if not set(paths) <= set(variants.PATHS) or not set(shapes_chosen) <= set(variants.SHAPES):
        raise SystemExit(f"--paths takes {', '.join(variants.PATHS)}; --shapes {', '.join(variants.SHAPES)}")
    chosen_variants = [v for v in variants.VARIANTS if v[0] in paths and v[1] in shapes_chosen]
    other_generated = args.generated if args.generated_variants is None else args.generated_variants
    # Model by model, each through every variant: a run stopped half-way has whole models.
    runs = [
        (case, variant)
        for case in cases
        for variant in chosen_variants
        if variant == ("compile", "static") or case.family != "generated" or _index(case.name) < other_generated
    ]
    whole_parts = {_part(family) for family in (FAMILIES if "all" in chosen else chosen) if family in FAMILIES}
    release = ".".join(map(str, probe.release))
    path = args.out / f"{release}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(release=release, versions=versions, commit=_commit(), machine=_machine())
    data["date"] = datetime.date.today().isoformat()
    data.setdefault("models", {})
    data.setdefault("parts", {})
    spent: Dict[str, float] = {}
    counted: Dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="trt-compat-saved-") as directory:
        saves = None if args.no_reload else Saves(Path(directory))
        for number, (case, variant) in enumerate(runs, start=1):
            name = variants.key(case.name, *variant)
            started = time.perf_counter()
            try:
                record = run_case(probe, case, variant, args.timeout, saves)
            except Exception as exc:  # the campaign's own failure on one model must not lose the others
                traceback.print_exc()
                record = {"family": case.family, "model": case.name, "path": variant[0], "shapes": variant[1]}
                record.update(status="not run", reason=f"campaign error: {_error(exc)}")
            record["commit"] = data["commit"]  # a model measured again later carries its own commit
            part = variants.key(_part(case.family), *variant)
            spent[part] = spent.get(part, 0.0) + time.perf_counter() - started
            counted[part] = counted.get(part, 0) + 1
            data["models"][name] = record
            summary = " / ".join(
                record[side]["status"] + _diff_text(record[side]) for side in ("without", "with") if side in record
            )
            seconds = time.perf_counter() - started
            print(f"[{number}/{len(runs)}] {release} {name}: {summary or record.get('reason')} [{seconds:.0f} s]")
            if args.print:
                print(json.dumps(record, indent=1), flush=True)
            sys.stdout.flush()
            _account(data, spent, counted, whole_parts, args)
            last = number == len(runs)
            if saves is not None and saves.pending and (last or len(saves.pending) >= RELOAD_BATCH):
                # In batches: two fresh processes per batch, and a run stopped half-way keeps its reloads.
                started = time.perf_counter()
                counted["reload"] = counted.get("reload", 0) + len(saves.pending)
                saves.reload(data)
                spent["reload"] = spent.get("reload", 0.0) + time.perf_counter() - started
                reloaded = {"models": counted["reload"], "seconds": round(spent["reload"], 1)}
                data["parts"]["reload (fresh processes)"] = reloaded
            # Written after every model: a run stopped half-way keeps what it measured.
            write(path, data)
    print(f"wrote {path}: {', '.join(f'{p} {counted[p]} models {spent[p]:.0f} s' for p in spent)}")
    return 0


def _index(name: str) -> int:
    from compat import generated

    found = generated.find(name)
    return found[1] if found else 0


def _account(data: dict, spent: Dict[str, float], counted: Dict[str, int], whole_parts: set, args: Any) -> None:
    for part, total in spent.items():
        if part.split("@")[0] not in whole_parts:
            continue  # single models measured again: the part's count and time stay those of its full run
        data["parts"][part] = {"models": counted[part], "seconds": round(total, 1)}
        if part.split("@")[0] == "generated":
            data["parts"][part].update(count=counted[part], seed=args.seed)


def write(path: Path, data: dict) -> None:
    """One model per line: compact, and a re-run's diff shows which models changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {key: value for key, value in sorted(data.items()) if key != "models"}
    lines = ["{"] + [f" {json.dumps(key)}: {json.dumps(value, sort_keys=True)}," for key, value in head.items()]
    models = sorted(data["models"].items())
    lines.append(' "models": {')
    lines += [
        f"  {json.dumps(name)}: {json.dumps(record, sort_keys=True)}{',' if number < len(models) else ''}"
        for number, (name, record) in enumerate(models, start=1)
    ]
    lines += [" }", "}"]
    path.write_text("\n".join(lines) + "\n")


def _part(family: str) -> str:
    return family.split(" ")[0] if not family.startswith("reproducer") else "reproducers"


def _diff_text(side: dict) -> str:
    if side["status"] == "mismatch":
        return f" ({side['max_difference']})"
    if side["status"] == "failed":
        return f" ({side['error'][:80]})"
    return ""


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())

"""Render the differential campaign's results (compat/differential/<release>.json, written by compat/campaign.py) as
compat/DIFFERENTIAL.md, with every mismatch and failure triaged by :data:`TRIAGE`.

    python -m compat.make_differential [--results compat/differential] [--check]      (from the repository root)

A result is triaged when a rule of TRIAGE matches it: the problem is fixed by a patch (named), or it is upstream
behaviour that is not a defect (with the reason). A "fixed by" rule explains the run *without* trt_compat, and the
run *with* it only where that patch was not applied in the run (not yet in the checkout measured, or outside its
release range): a problem that remains with the patch applied is not fixed, and needs a rule of its own. Anything no
rule explains is listed as untriaged and the generator exits 1 (after writing the file, so the report shows it).
``--check`` writes nothing and exits 1 when the file is stale or anything is untriaged. Standard library only.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "differential"
OUTPUT = HERE / "DIFFERENTIAL.md"
SIDES = ("without", "with", "reload_without", "reload_with")
PATHS = ("compile", "export")
SHAPES = ("static", "dynamic")


@dataclass(frozen=True)
class Rule:
    key: str
    status: str  # "failed" or "mismatch"
    reason: str  # what happens, and (for upstream behaviour) why it is not a defect
    patch: Optional[str] = None  # "fixed by" this patch; None: upstream behaviour (or an open defect)
    # An upstream defect reduced to its cause, which no patch fixes yet: listed apart, and still fails the generator.
    open_defect: bool = False
    first: str = "2.2.0"  # first release the rule covers
    fixed: Optional[str] = None  # first release it no longer covers
    models: str = "*"  # fnmatch pattern on the model name ("a|b": either)
    # The value audit's first finding (any finding, with any_finding) names this pass, says this changed, on this
    # input set (regular expressions for the last two).
    first_pass: Optional[str] = None
    first_what: Optional[str] = None
    first_inputs: Optional[str] = None
    any_finding: bool = False
    only_passes: Optional[Tuple[str, ...]] = None  # every pass the value audit names is one of these
    error: Optional[str] = None  # regular expression the error's first line must contain
    relative_at_most: Optional[float] = None  # largest difference to eager, relative to the value's magnitude
    where: Optional[str] = None  # regular expression the first difference's description must contain
    note: Optional[str] = None  # regular expression the model's description must contain (generated models)
    paths: Tuple[str, ...] = PATHS  # the compile paths it covers (compile: torch.compile; export: dynamo.compile)
    shapes: Tuple[str, ...] = SHAPES  # static, dynamic
    # The sides it covers: without / with trt_compat in the compiling process, reload_without / reload_with: the
    # program compiled with trt_compat, saved, and loaded in a fresh process without / with trt_compat.
    sides: Tuple[str, ...] = SIDES
    # Export path: regular expression the comparison with the decomposed exported program run in PyTorch must match
    # ("same": the compiled module computes exactly what the decompositions compute).
    vs_decomposed: Optional[str] = None
    # Reload sides: the reloaded program differs from eager exactly as the in-process compiled module (with) does.
    same_as_compiled: bool = False

    @property
    def verdict(self) -> str:
        if self.open_defect:
            return "**open upstream defect** (no patch yet)"
        return f"fixed by `{self.patch}`" if self.patch else "upstream behaviour"


# Every rule is backed by a reduction of the case to its cause (pass, release, reproducer): see the reason, the patch's
# docstring and the report that introduced it. Keep them narrow: a rule that explains too much hides the next defect.
TRIAGE: Tuple[Rule, ...] = (
    Rule(
        key="identity_ops_view",
        status="failed",
        patch="keep_identity_ops",
        first="2.12.0",
        first_pass="fold_get_attr_item_calls",
        error=r"Cannot view a tensor with shape",
        reason=(
            "fold_get_attr_item_calls (2.12+) removes every contiguous() before AOT tracing, so "
            "x.transpose().contiguous().view() (attention heads, shufflenet's channel shuffle) fails to trace"
        ),
    ),
    Rule(
        key="input_item_folded",
        status="mismatch",
        patch="fold_only_constants",
        first="2.12.0",
        first_pass="fold_get_attr_item_calls",
        # Right on the compile's own inputs, wrong on any other: the folded number is the first call's.
        first_inputs=r"^generated ",
        where=r"^call [23], ",
        reason=(
            "fold_get_attr_item_calls (2.12+) folds .item() of a graph input into the number it has at compile time: "
            "the first call is right, every later call computes with the first call's value (probes input_item, "
            "input_clone_item; the clone chain is also kept by keep_identity_ops)"
        ),
    ),
    Rule(
        key="identity_ops_clone",
        status="mismatch",
        patch="keep_identity_ops",
        first="2.12.0",
        first_pass="fold_get_attr_item_calls",
        first_inputs=r"^the compile's real inputs$",
        reason=(
            "fold_get_attr_item_calls (2.12+) removes every clone/contiguous/detach before AOT tracing: a clone "
            "changed in place no longer protects its source (wrong numbers, no error)"
        ),
    ),
    Rule(
        key="input_mutation_lost",
        status="mismatch",
        patch="keep_input_mutations",
        first_pass="repair_input_aliasing",
        first_what=r"^final contents of input ",
        any_finding=True,  # after fold_get_attr_item_calls (2.12+), which may change other values first
        reason=(
            "repair_input_aliasing clones every graph input before AOT tracing, so in-place updates of inputs "
            "(and of buffers, graph inputs since torch 2.5) land on the clones and never reach the caller"
        ),
    ),
    Rule(
        key="decomposition_rounding",
        status="mismatch",
        first_pass="aot_export_joint_simple",
        only_passes=("aot_export_joint_simple",),
        relative_at_most=1e-5,
        where=r"^call [123], output ",
        reason=(
            "AOT tracing applies Torch-TensorRT's decompositions, which replace fused kernels by elementary ops: "
            "the same function rounded at each step, so the last bits differ from eager (measured on single ops on "
            "2.14.0: upsample_bilinear2d 2.1e-6, log_softmax and addcmul 4.8e-7, silu and lerp 2.4e-7, var 6e-8 at "
            "magnitude ~1; no other pass named, and within 1e-5 of the value's magnitude). Not a defect: a TensorRT "
            "engine rounds differently again; the value audit's tolerance for this step (trt_compat.audit.TOLERANCES) "
            "is the same bound"
        ),
    ),
    Rule(
        key="parameter_clone_rounding",
        status="mismatch",
        first_pass="repair_input_aliasing",
        only_passes=("repair_input_aliasing", "aot_export_joint_simple"),
        relative_at_most=1e-5,
        where=r"^call [123], output ",
        reason=(
            "repair_input_aliasing clones every graph input, parameters included, and a clone does not require grad: "
            "matmul picks its kernel by requires_grad even under no_grad (it folds the batch dimensions of a "
            "non-contiguous input into one mm only when no operand requires grad), so a Linear on a transposed "
            "4-D input rounds differently from eager in the last bits (reduced: gen-0-0170, "
            "`x.transpose(2, 3)` then `Linear(11, 11)`, 4.8e-7). Not a defect: rounding, removed with the clones "
            "after tracing, and a TensorRT engine rounds differently again"
        ),
    ),
    Rule(
        key="buffer_mutation_fails_aot",
        status="failed",
        patch="keep_input_mutations",
        first="2.2.0",
        fixed="2.5.0",
        error=(
            r"mutating a non-functional tensor with a functional tensor"
            r"|n=copy_, n\.args\[0\]=(clone|_tensor_constant)"
        ),
        reason=(
            "torch 2.4 and older keep buffers as get_attr nodes: AOT tracing fails on their in-place update instead "
            "(the graph falls back to PyTorch, or with pass_through_build_failures does not compile)"
        ),
    ),
    Rule(
        key="buffer_mutation_fails_aot_bare",
        status="failed",
        patch="keep_input_mutations",
        first="2.3.0",
        fixed="2.4.0",
        models="step_counter",
        error=r"^AssertionError: ?$",
        reason=(
            "as buffer_mutation_fails_aot: on torch 2.3 the same refusal of an in-place buffer update is an "
            "AssertionError without a message (assert_functional_graph: copy_ into a non-input)"
        ),
    ),
    Rule(
        key="attention_mask_copy_fails_aot",
        status="failed",
        first="2.3.0",
        fixed="2.5.0",
        error=r"n=copy_, n\.args\[0\]=full_like|^AssertionError: ?$",
        note=r"sdpa\([^)]*(mask|is_causal)",
        reason=(
            "scaled_dot_product_attention with is_causal or a mask: on torch 2.3 and 2.4 its CPU decomposition fills "
            "a full_like mask in place, which aot_export_joint_simple refuses (assert_functional_graph: copy_ into "
            "a non-input; an AssertionError without a message on 2.3, 'n=copy_' on 2.4): the compile fails loudly, "
            "and by default falls back to PyTorch. Not a wrong number"
        ),
    ),
    Rule(
        key="captured_scalar_block_input",
        status="failed",
        error=r"meta val for input node _local_scalar_dense is of type : <class 'torch.SymFloat'>",
        reason=(
            "with capture_scalar_outputs an .item() without folding becomes a SymFloat input of a TensorRT block, "
            "which construct_submodule_inputs rejects: the compile fails loudly (by default the graph falls back to "
            "PyTorch). A missing feature, not a wrong number"
        ),
    ),
    Rule(
        key="unpool_garbage",
        status="mismatch",
        patch="tuple_pooling",
        first_pass="aot_export_joint_simple",
        note=r"MaxUnpool2d",
        reason=(
            "max_pool2d_with_indices + max_unpool2d lowered by upstream give values that change from run to run "
            "(denormal-level on the first call, up to 2.2e30 on the second: gen-0-0070, 2.5.0 and 2.12.1), so every "
            "pass after AOT tracing looks like it changed them; tuple_pooling's own unpooling (zeros + scatter) is "
            "bit-exact, and TRT_COMPAT_DISABLE=tuple_pooling brings the mismatch back (2.5.0). Not reduced further"
        ),
    ),
    Rule(
        key="mutation_through_view_untraceable",
        status="failed",
        first="2.4.0",
        fixed="2.12.0",
        error=r"cannot mutate tensors with frozen storage",
        reason=(
            "an in-place update through an alias of a view of an intermediate (y = x.contiguous(); y.add_() after "
            "x.view().view(), or y = x.detach(); y.add_()) fails AOT tracing with Torch-TensorRT's decompositions "
            "(aot_eager traces it correctly): the compile fails loudly, and by default falls back to PyTorch. Not a "
            "wrong number; measured on 2.4.0 and 2.5.0 (gen-0-0044, gen-0-0048)"
        ),
    ),
    Rule(
        key="select_scatter_layout",
        status="mismatch",
        patch="keep_scatter_layout",
        first="2.4.0",
        fixed="2.14.0",
        first_pass="aot_export_joint_simple",
        note=r"x\[:, 0\] \+= x\[:, -1\]",
        reason=(
            "AOT tracing decomposes x[:, 0] += ... (select_scatter) through Torch-TensorRT's slice_scatter "
            "decomposition into scatter, whose result is contiguous where eager keeps x's (transposed) layout; a "
            "later y = x.contiguous() is then traced as an alias instead of a copy, and y.add_() leaks into x. "
            "Reduced (gen-0-0168): x.transpose(2, 3).contiguous().mul_(0.5).transpose(2, 3).clone(); "
            "x[:, 0] += x[:, -1]; x = (x * 0.25).add_(-0.5); y = x.contiguous(); y.add_(2); x * y: off by 4.0 on "
            "2.5.0, 2.12.1, 2.13.0 (and in the campaign on 2.4.0); 2.14.0 no longer decomposes slice_scatter (on 2.12+ "
            "keep_identity_ops is needed as well: the backend also removes the contiguous() itself)"
        ),
    ),
    Rule(
        key="causal_sdpa_mask_decomposition",
        status="mismatch",
        patch="keep_empty_strided_dtype",
        first="2.4.0",
        fixed="2.5.0",
        first_pass="aot_export_joint_simple",
        note=r"is_causal=True",
        reason=(
            "scaled_dot_product_attention(x, x, x, is_causal=True) of a transposed x: torch 2.4's decomposition builds "
            "the causal mask with empty_strided(..., dtype=torch.bool), and Torch-TensorRT's empty_strided "
            "decomposition (2.4.0 and newer) ignores the dtype, so the mask becomes float ones added to the scores "
            "instead of masking them (off by 0.57-0.74; gen-0-0109, gen-0-0135, gen-0-0168 on 2.4.0). torch 2.5 and "
            "newer build the mask otherwise; the dtype loss itself remains up to 2.14.0 (keep_empty_strided_dtype's "
            "integer reproducer)"
        ),
    ),
    Rule(
        key="pool_tuple_meta",
        status="failed",
        patch="tuple_partition_inputs",
        first="2.2.0",
        fixed="2.5.0",
        error=(
            r"The meta val for input node max_pool2d.* is of type : <class 'tuple'>|meta val for input node"
            r"|Input max_pool2d\w* does not contain metadata"
        ),
        reason=(
            "#3185: a fused max_pool2d carries a tuple (or, on 2.3, no) val into construct_submodule_inputs, which "
            "aborts the compile"
        ),
    ),
    Rule(
        key="scatter_layout_reproducer",
        status="mismatch",
        patch="keep_scatter_layout",
        first="2.4.0",
        fixed="2.14.0",
        models="scatter_then_contiguous",
        first_pass="aot_export_joint_simple",
        reason="keep_scatter_layout's own reproducer: the defect of select_scatter_layout, reduced",
    ),
    Rule(
        key="empty_strided_dtype",
        status="mismatch",
        patch="keep_empty_strided_dtype",
        first="2.4.0",
        models="wrapping_counts",
        first_pass="aot_export_joint_simple",
        reason=(
            "keep_empty_strided_dtype's reproducer: Torch-TensorRT's empty_strided decomposition (2.4.0 and newer) "
            "makes a float32 tensor whatever dtype was asked for, so uint8 250 + 10 gives 260 instead of 4"
        ),
    ),
    Rule(
        key="causal_mask_reproducer",
        status="mismatch",
        patch="keep_empty_strided_dtype",
        first="2.4.0",
        fixed="2.5.0",
        models="causal_attention",
        first_pass="aot_export_joint_simple",
        reason="keep_empty_strided_dtype's causal-attention reproducer: the defect of causal_sdpa_mask_decomposition",
    ),
)


# The export path and dynamic shapes (compat/variants.py).
EXPORT_RULES: Tuple[Rule, ...] = (
    Rule(
        key="export_decomposition_rounding",
        status="mismatch",
        paths=("export",),
        sides=("without", "with"),
        relative_at_most=1e-5,
        where=r"^call [123], output ",
        vs_decomposed=r"^same$",
        reason=(
            "the export path decomposes the exported program with Torch-TensorRT's decompositions "
            "(ExportedProgram.run_decompositions, which the value audit does not wrap): the exported program with "
            "those decompositions, run in PyTorch, gives the compiled module's numbers bit for bit, so the last bits "
            "that differ from eager are the decompositions' own rounding (as decomposition_rounding on the "
            "torch.compile path; Llama/Mistral RMSNorm and rotary embedding, T5's relative attention: 1.2e-7 to "
            "9.5e-7 at magnitude ~1). Not a defect"
        ),
    ),
    Rule(
        key="reloaded_as_compiled",
        status="mismatch",
        paths=("export",),
        sides=("reload_without", "reload_with"),
        same_as_compiled=True,
        reason=(
            "the program saved with torch_tensorrt.save and loaded in a fresh process (with or without trt_compat) "
            "computes exactly what the compiled module computed in the compiling process (same largest difference, "
            "same first difference): the cause is the one its 'with' side is triaged with"
        ),
    ),
    Rule(
        key="save_needs_an_engine",
        status="failed",
        paths=("export",),
        sides=("reload_without", "reload_with"),
        error=r"^save: AttributeError: 'GraphModule' object has no attribute 'engine'",
        reason=(
            "torch_tensorrt.save inlines each TensorRT block's serialized engine (2.5.0 always; 2.14.0 for a "
            "module compiled with dynamic shapes, where retrace=True keeps the symbolic shapes instead of "
            "re-exporting); in dryrun no engine is built, so what a deployment would save cannot be saved here. "
            "A limit of measuring without a GPU, not a defect: the reload is not measured"
        ),
    ),
    Rule(
        key="saved_program_is_static",
        status="failed",
        first="2.4.0",
        fixed="2.6.0",
        paths=("export",),
        shapes=("dynamic",),
        sides=("reload_without", "reload_with"),
        error=r"Expected input at \*args\[\d+\]\.shape\[\d+\] to be equal to",
        reason=(
            "2.4.0's and 2.5.0's torch_tensorrt.save have no dynamic_shapes parameter: retrace=True re-exports the "
            "compiled module at the example's shapes, so the saved program accepts only the first size and refuses "
            "the second call's (loud, not a wrong number). A limit of those releases' save API"
        ),
    ),
    Rule(
        key="saved_after_the_calls",
        status="mismatch",
        paths=("export",),
        models="step_counter",
        sides=("reload_without", "reload_with"),
        where=r"^call 1, output ",
        reason=(
            "the campaign's own limit: its runner saves the compiled module after the three in-process calls, so a "
            "model whose buffer counts calls is saved with the count of three and the reloaded program starts from "
            "there (the export branch's Probe.serve saves before the first call, and its integration tests measure "
            "the served counter bit for bit). To do: save before the first call, as Probe.compile_exported does"
        ),
    ),
    Rule(
        key="save_retrace_refuses_mutated_duplicates",
        status="failed",
        first="2.4.0",
        fixed="2.6.0",
        paths=("export",),
        sides=("reload_without", "reload_with"),
        error=r"^save: RuntimeError: Encountered duplicated inputs that are mutated in the graph",
        reason=(
            "2.4.0 and 2.5.0: torch_tensorrt.save without an engine needs retrace=True (retrace=False inlines engines, "
            "save_needs_an_engine), which re-exports the compiled module with torch.export; for a module whose "
            "KV-cache write was folded into a constant (export_constant_fold_buffer_update) torch.export refuses "
            "the duplicated mutated input. The saved-and-reloaded path is not measurable for it here"
        ),
    ),
    Rule(
        key="symint_inputs_misaligned",
        status="failed",
        first="2.4.0",
        fixed="2.12.0",
        paths=("compile",),
        shapes=("dynamic",),
        error=r"missing \d+ required positional arguments?: ",
        reason=(
            "2.4.0 and 2.5.0 _pretraced_backend: remove_sym_nodes erases only the SymInt placeholders nothing uses, "
            "but the backend then passes AOT tracing only the tensor sample inputs; a SymInt input the graph "
            "computes with (a dynamic batch or sequence length in a view/reshape: every attention block, GPT-2, "
            "BERT, T5, Llama) shifts every later input by one, and AOT tracing fails with 'forward() missing N "
            "required positional arguments' (the last N parameters). The compile fails loudly (by default the graph "
            "falls back to PyTorch). 2.12.1 first replaces SymInt uses by sym_size and pops each removed "
            "placeholder's sample input. Reduced: dynamic_true_attention (torch.compile(dynamic=True) of "
            "tests/helpers/models.py's transformer block), with and without trt_compat"
        ),
    ),
    Rule(
        key="symint_block_input_as_tensor",
        status="failed",
        first="2.4.0",
        fixed="2.5.0",
        paths=("compile",),
        shapes=("dynamic",),
        error=r"Expected a value of type '(List\[int\]|Optional\[int\])' for argument '\w+' but instead found type",
        reason=(
            "2.4.0's compile_module runs every TensorRT block once on sample inputs built from its Inputs to learn "
            "its output shapes (on a GPU as here); a dynamic size that crosses into a block (GPT-2's and BERT's "
            "sequence length, used by the block's expand) is described as a 1-D int64 Input and handed to the "
            "block as a tensor where its graph expects an int, so expand() (GPT-2, BERT) or slice() (Llama) raises. "
            "Measured on GPT-2: the block inputs are "
            "Input(min (1,), opt (8,), max (16,), int64) and Input((0,), int64), run as tensors of shape (1,). "
            "Loud, not a wrong number (by default the graph falls back to PyTorch); 2.5.0 fails earlier "
            "(symint_inputs_misaligned), 2.12.1 and 2.14.0 compile both bit-exactly"
        ),
    ),
    Rule(
        key="torch_export_refuses_cache_update",
        status="failed",
        first="2.4.0",
        fixed="2.6.0",
        paths=("export",),
        models="hf_llama_static_cache",
        sides=("without", "with"),
        error=r"Found a graph input that requires gradients, and received a mutation",
        reason=(
            "torch 2.4's and 2.5's torch.export.export itself (before Torch-TensorRT runs) refuses the Llama "
            "decoder whose StaticCache tensors are buffers updated in place (transformers 4.44.2 and 4.47.1, "
            "sequence length dynamic): "
            "AOT export sees the parameters as inputs requiring grad next to the mutated buffers. The export path "
            "cannot start on this release; the torch.compile path is measured"
        ),
    ),
    Rule(
        key="torch_export_autocast_meta",
        status="failed",
        first="2.4.0",
        fixed="2.5.0",
        paths=("export",),
        models="hf_llama|hf_mistral",
        sides=("without", "with"),
        error=r"SpecViolationError: Node.meta _enter_autocast is missing val field",
        reason=(
            "torch 2.4.1's torch.export.export itself (the campaign names it 'torch.export:') fails its own "
            "verifier on Llama and Mistral of transformers 4.44.2, whose rotary embedding runs under "
            "torch.autocast(enabled=False): the exported _enter_autocast node has no val. The export path cannot "
            "start on this release; torch 2.5.1 exports them"
        ),
    ),
    Rule(
        key="torch_export_specializes_sequence",
        status="failed",
        first="2.12.0",
        fixed="2.13.0",
        paths=("export",),
        shapes=("dynamic",),
        models="hf_llama|hf_mistral",
        sides=("without", "with"),
        error=r"Constraints violated \(seq\)",
        reason=(
            "torch 2.12.1's torch.export.export itself (before Torch-TensorRT runs; the campaign names it "
            "'torch.export:') specializes the dynamic sequence length of Llama and Mistral (transformers 5.23.0) "
            "and refuses the Dim: the export path cannot start. torch 2.14.1 exports the same models with the same "
            "Dim. Not reduced further inside torch"
        ),
    ),
    Rule(
        key="torch_decomposition_of_static_cache",
        status="failed",
        first="2.12.0",
        paths=("export",),
        models="hf_llama_static_cache",
        sides=("without", "with"),
        error=r"expected compiled_fn to be GraphModule, got <class 'function'>",
        reason=(
            "torch 2.12.1's and 2.14.1's ExportedProgram.run_decompositions() fails on the exported StaticCache "
            "decoder (transformers 5.23.0) in torch's own aot_stage2_export, with torch's default decomposition "
            "table as well as Torch-TensorRT's (measured both; on 2.14.1 the static prefill alone too): torch.export "
            "succeeds, the "
            "first step of torch_tensorrt.dynamo.compile cannot. A torch limitation, not Torch-TensorRT's"
        ),
    ),
    Rule(
        key="slice_scatter_symbolic_end",
        status="failed",
        first="2.4.0",
        fixed="2.12.0",
        shapes=("dynamic",),
        sides=("without", "with"),
        error=r"AssertionError: end must be an integer",
        reason=(
            "Torch-TensorRT's slice_scatter decomposition (2.5.0; keep_scatter_layout keeps it as the fallback "
            "for the cases it does not take over) asserts that the slice's end is a Python int; with a dynamic "
            "dimension the end defaults to that dimension's size, a SymInt, and AOT tracing (torch.compile) or the "
            "export path's run_decompositions fails: loud, not a wrong number. Reduced: scatter_then_contiguous "
            "with its batch dynamic, both paths, with and without trt_compat"
        ),
    ),
    Rule(
        key="export_constant_fold_buffer_update",
        status="mismatch",
        first="2.2.0",
        fixed="2.14.0",
        paths=("export",),
        models="step_counter",
        sides=("without", "with"),
        where=r"^call [23], output ",
        patch="keep_exported_buffer_updates",
        reason=(
            "2.4.0's, 2.5.0's and 2.12.1's export path (2.2.0-2.13.x by keep_exported_buffer_updates' measurements): "
            "the exported program's buffer update (count + 1, then copy_ into the buffer) "
            "reaches post-lowering as get_attr count -> add -> copy_(count, add); constant_fold folds count + 1 "
            "into a frozen constant and the copy_ back into the buffer disappears with it (measured pass by pass: "
            "after constant_fold only the mul is left), so the counter never advances: every call computes with "
            "the first call's count (wrong numbers from the second call, no error; on a GPU too: lowering does not "
            "depend on the device). 2.14.0 lifts mutated buffers to inputs first (export_buffer_copy_back). "
            "The value audit names no pass here (left as a lead: it misses this get_attr buffer's write on the "
            "export path). Fixed by the export branch's keep_exported_buffer_updates (2.2.0-2.13.x), merged after "
            "these records were measured"
        ),
    ),
    Rule(
        key="export_input_update_erased",
        status="mismatch",
        first="2.12.0",
        paths=("export",),
        sides=("without", "with", "reload_without", "reload_with"),
        models="add_to_input|kv_cache_write|gen-*",
        where=r"(input \d+|buffer \w+): ",
        patch="keep_export_input_updates",
        reason=(
            "remove_num_users_is_0_nodes (post-lowering, 2.12.1 and 2.14.0) erases every node without users "
            "(except the output), including the aten.copy_ that ExportedProgram.module() puts at the end of the "
            "graph to write a user input's in-place update back into the input: x.add_(1); return x * 2 returns "
            "the right product, but the caller's x is never updated (wrong state, no error), and the saved program "
            "loses it too; on 2.12.1 likewise the copy_ of a KV-cache row into its buffer (kv_cache_write). The "
            "value audit names the pass on generated inputs (final contents of input 'x' / attribute 'cache', no "
            "longer written); measured pass by pass on 2.12.1. Reduced: add_to_input and kv_cache_write "
            "(keep_input_mutations' reproducers) through the export path. Fixed by the export branch's "
            "keep_export_input_updates (input updates, 2.7.0+) and keep_exported_buffer_updates (buffer writes, "
            "2.2.0-2.13.x), merged after these records were measured"
        ),
    ),
    Rule(
        key="export_cache_buffer_frozen",
        status="mismatch",
        first="2.2.0",
        fixed="2.14.0",
        paths=("export",),
        models="kv_cache_write",
        sides=("without", "with"),
        patch="keep_exported_buffer_updates",
        where=r"^buffer cache: ",
        reason=(
            "the KV-cache buffer is no longer a buffer of the compiled module on 2.4.0 and 2.5.0 (on 2.12.1 "
            "remove_num_users_is_0_nodes erases its write, export_input_update_erased): its write survives "
            "lowering (measured pass by pass on 2.5.0) but runs on a copy inside a block, which an engine bakes as a "
            "constant, so the cache's state is not the module's. The outputs of the three calls are bit-exact here "
            "(each call rewrites the same row). Fixed by the export branch's keep_exported_buffer_updates "
            "(2.2.0-2.13.x: updated buffers become engine inputs and are written back), merged after these records "
            "were measured: bit-exact with it on 2.4.0 (python -m compat.campaign --models kv_cache_write --paths "
            "export --shapes static)"
        ),
    ),
    Rule(
        key="export_buffer_copy_back",
        status="mismatch",
        first="2.14.0",
        patch="apply_buffer_copy_back",
        paths=("export",),
        models="step_counter|kv_cache_write",
        sides=("without", "with"),
        where=r"^(buffer |call [23], output )",
        reason=(
            "2.14.0's export path lifts mutated buffers to inputs (lift_mutated_buffers) and records their write-back "
            "as copy-back outputs that it then hides (_copyback_mutation_buffers): the compiled module never writes "
            "them back, only the saved program does (the reload rows keep every write bit for bit), so in memory the "
            "counter repeats and the KV row stays empty (wrong numbers, no error). Fixed by the export branch's "
            "apply_buffer_copy_back, merged after these records were measured; what a real engine's aliased I/O "
            "does is not measurable here"
        ),
    ),
    Rule(
        key="empty_strided_dtype_export",
        status="mismatch",
        first="2.4.0",
        paths=("export",),
        models="wrapping_counts",
        sides=("without", "reload_without"),
        patch="keep_empty_strided_dtype",
        reason=(
            "keep_empty_strided_dtype's reproducer on the export path: the same empty_strided decomposition "
            "(float32 whatever dtype was asked) runs in run_decompositions; fixed there too"
        ),
    ),
    Rule(
        key="causal_mask_export",
        status="mismatch",
        first="2.4.0",
        fixed="2.5.0",
        paths=("export",),
        models="causal_attention",
        sides=("without", "reload_without"),
        patch="keep_empty_strided_dtype",
        vs_decomposed=r"^same$",
        reason=(
            "keep_empty_strided_dtype's causal-attention reproducer on the export path: run_decompositions builds "
            "the causal mask with the dtype-losing empty_strided decomposition (the decomposed program in PyTorch "
            "is just as wrong: off by up to 0.82); bit-exact with the patch"
        ),
    ),
    Rule(
        key="scatter_layout_export",
        status="mismatch",
        first="2.4.0",
        fixed="2.14.0",
        paths=("export",),
        models="scatter_then_contiguous",
        sides=("without", "reload_without"),
        patch="keep_scatter_layout",
        reason=(
            "keep_scatter_layout's reproducer on the export path: run_decompositions applies the same "
            "slice_scatter decomposition (a contiguous scatter where eager keeps the input's layout), so the later "
            ".contiguous() is an alias and the in-place add leaks into x (off by 6.74 on 2.12.1, static and dynamic "
            "shapes); bit-exact with the patch"
        ),
    ),
    Rule(
        key="full_like_symbolic_size",
        status="failed",
        first="2.5.0",
        fixed="2.12.0",
        paths=("export",),
        shapes=("dynamic",),
        sides=("without", "with"),
        error=r"^call 1: NameError: name 's\d+' is not defined|NameError: name 's\d+' is not defined",
        reason=(
            "2.5.0's replace_full_like_with_full replaces full_like(x) by full(x's shape) with the shape of x's fake "
            "value, so a dynamic size (T5's relative-position buckets over a dynamic sequence length) is written "
            "into the graph as a bare symbol: the generated code of the block says s0, and running the block in "
            "PyTorch raises NameError (in dryrun always; on a GPU wherever the block is not built as an engine). "
            "Loud, not a wrong number; 2.12.1 and 2.14.0 compile and run T5 with a dynamic sequence length "
            "bit-exactly"
        ),
    ),
    Rule(
        key="unbounded_dynamic_range",
        status="failed",
        first="2.5.0",
        fixed="2.12.0",
        paths=("compile",),
        shapes=("dynamic",),
        error=r"'Infinity' object has no attribute '_mpf_'",
        reason=(
            "2.5.0 torch_tensorrt.dynamo.utils.extract_var_range_info does int(var_range.upper) for every symbolic "
            "size of a TensorRT block's input; with torch.compile(dynamic=True) a size has no upper bound, and for a "
            "size that is an expression (the output of a ceil-mode pool, an attention reshape) bound_sympy gives "
            "sympy's oo, whose int() raises this AttributeError inside sympy. construct_submodule_inputs fails, so "
            "the compile fails loudly (by default falls back to PyTorch). Not with mark_dynamic(min, max) (bounded: "
            "the campaign's other dynamic models). 2.12.1 maps torch's int_oo to None, 2.14.0 sympy's oo too. "
            "Reduced: dynamic_true_ceil_pool (conv, MaxPool2d(3, 2, ceil_mode=True), conv; dynamic=True), with and "
            "without trt_compat"
        ),
    ),
)


# -- reading -----------------------------------------------------------------------------------------------------
def parse_release(text: str) -> Tuple[int, ...]:
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (3 - len(parts))


def load(folder: Path) -> Dict[str, dict]:
    found = {}
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text())
        found[data["release"]] = data
    return dict(sorted(found.items(), key=lambda item: parse_release(item[0])))


def variant_of(record: dict) -> Tuple[str, str]:
    """(path, shapes) of a record; records from before the dimensions existed are torch.compile with static shapes."""
    return record.get("path", "compile"), record.get("shapes", "static")


def first_finding(side: dict) -> dict:
    findings = side.get("audit") or []
    return findings[0] if findings else {}


def first_pass(side: dict) -> str:
    return first_finding(side).get("pass", "")


def matches(
    rule: Rule, release: str, model: str, side_name: str, side: dict, note: str = "", record: Optional[dict] = None
) -> bool:
    version = parse_release(release)
    if side.get("status") != rule.status or version < parse_release(rule.first):
        return False
    record = record or {}
    path, shapes = variant_of(record)
    if side_name not in rule.sides or path not in rule.paths or shapes not in rule.shapes:
        return False
    if rule.fixed is not None and version >= parse_release(rule.fixed):
        return False
    if not any(fnmatch.fnmatchcase(model, pattern) for pattern in rule.models.split("|")):
        return False
    if rule.patch is not None and side_name != "without" and rule.patch in side.get("patches", []):
        return False  # the patch was applied, and the problem is still there: not fixed
    findings = (side.get("audit") or []) if rule.any_finding else [first_finding(side)]
    if not any(_finding_matches(rule, finding) for finding in findings):
        return False
    if rule.only_passes is not None and not {f["pass"] for f in side.get("audit") or []} <= set(rule.only_passes):
        return False
    if rule.error is not None and not re.search(rule.error, side.get("error", "")):
        return False
    if rule.where is not None and not re.search(rule.where, side.get("where", "")):
        return False
    if rule.note is not None and not re.search(rule.note, note):
        return False
    if rule.relative_at_most is not None and not _number(side.get("relative_difference")) <= rule.relative_at_most:
        return False
    if rule.vs_decomposed is not None and not re.search(rule.vs_decomposed, side.get("vs_decomposed", "")):
        return False
    if rule.same_as_compiled:
        compiled = record.get("with") or {}
        fields = ("status", "max_difference", "where")
        if any(side.get(name) != compiled.get(name) for name in fields):
            return False
    return True


def _finding_matches(rule: Rule, finding: dict) -> bool:
    if rule.first_pass is not None and finding.get("pass", "") != rule.first_pass:
        return False
    if rule.first_what is not None and not re.search(rule.first_what, finding.get("what", "")):
        return False
    return rule.first_inputs is None or bool(re.search(rule.first_inputs, finding.get("inputs", "")))


def _number(value: object) -> float:
    if value == "inf" or value is None:
        return float("inf")
    return float(value)  # type: ignore[arg-type]


@dataclass(eq=False)
class Case:
    release: str
    model: str
    family: str
    side: str
    record: dict
    rule: Optional[Rule]
    full: dict  # the model's whole record (path, shapes, note)


def problems(results: Dict[str, dict]) -> List[Case]:
    """Every failed or mismatched side of every model, with the first rule that explains it (or None)."""
    found = []
    for release, data in results.items():
        for model, record in data["models"].items():
            for side_name in SIDES:
                side = record.get(side_name)
                if not side or side.get("status") not in ("failed", "mismatch"):
                    continue
                note, name = record.get("note", ""), record.get("model", model)
                rules = TRIAGE + EXPORT_RULES
                rule = next((r for r in rules if matches(r, release, name, side_name, side, note, record)), None)
                found.append(Case(release, model, record.get("family", ""), side_name, side, rule, record))
    return found


# -- rendering ---------------------------------------------------------------------------------------------------
def counts(data: dict, side_name: str, variant: Optional[Tuple[str, str]] = None) -> Tuple[int, int, int, int]:
    """(models run, bit-exact, mismatched, failed) on one side, of one (path, shapes) variant if given."""
    records = [r for r in data["models"].values() if variant is None or variant_of(r) == variant]
    sides = [record[side_name] for record in records if side_name in record]
    sides = [side for side in sides if side["status"] != "not run"]
    found = {status: sum(1 for side in sides if side["status"] == status) for status in ("ok", "mismatch", "failed")}
    return len(sides), found["ok"], found["mismatch"], found["failed"]


def not_run(data: dict, variant: Tuple[str, str]) -> int:
    return sum(1 for r in data["models"].values() if variant_of(r) == variant and "without" not in r)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _part_cell(data: dict) -> str:
    parts = data.get("parts", {})
    return ", ".join(f"{name} {p['models']} in {_duration(p['seconds'])}" for name, p in sorted(parts.items()))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _difference(side: dict) -> str:
    if side["status"] == "failed":
        return _cell(side.get("error", ""))
    value = side.get("max_difference")
    text = "inf" if value == "inf" else f"{float(value):.3g}"
    return _cell(f"max \\|diff\\| {text}: {side.get('where', '')}")


def _named(side: dict) -> str:
    findings = side.get("audit")
    if findings is None:
        return "(not audited)"
    if not findings:
        return "none"
    first = findings[0]
    difference = first["difference"]
    amount = "inf" if difference == "inf" else f"{float(difference):.3g}"
    return _cell(f"`{first['pass']}` ({first['phase']}): {first['what']}, {amount}")


def render(results: Dict[str, dict]) -> Tuple[str, List[Case]]:
    cases = problems(results)
    untriaged = [case for case in cases if case.rule is None]
    still_open = [case for case in cases if case.rule is not None and case.rule.open_defect]
    lines = [
        "# Differential campaign",
        "",
        "<!-- generated by compat/make_differential.py from compat/differential/*.json (do not edit by hand) -->",
        "",
        "Every model compiled in dryrun on both paths, with static and dynamic shapes, without and with trt_compat,",
        "and compared with eager PyTorch **bit for bit** over three calls (outputs, and the contents of inputs and",
        "buffers after each call); the value audit names the graph pass behind each difference. Measured with",
        "`python -m compat.campaign` in each release's harness venv; rendered and triaged by",
        "`python -m compat.make_differential`. Dryrun only: TensorRT engines cannot be built or compared on these",
        "machines, so what an engine computes (and whether its aliased outputs keep in-place updates) is not measured.",
        "",
        "## Per release",
        "",
        'Per release, path (`compile`: `torch.compile(backend="torch_tensorrt")`; `export`: `torch.export.export` ->',
        "`torch_tensorrt.dynamo.compile`) and shapes (`static`; `dynamic`: three sizes of the batch or sequence axis,",
        "`mark_dynamic` / `Dim` + `Input(min, opt, max)`): models compiled, then bit-exact / mismatched / failed over",
        "three calls. `reloaded` rows: the export path's program compiled with trt_compat, saved with",
        "`torch_tensorrt.save` and loaded in a fresh process without / with trt_compat (a failed save counts as failed",
        "on both). `measured at`: the trt_compat commit each model was last measured at (a part measured again later",
        "carries its own; `not recorded`: measured before records kept their commit), with how many models.",
        "",
        "| release | torch | path | shapes | compiled | without trt_compat: bit-exact / mismatched / failed "
        "| with trt_compat: bit-exact / mismatched / failed | not run | open defects | untriaged | measured at |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for release, data in results.items():
        torch_version = data["versions"].get("torch", "?")
        present = {variant_of(record) for record in data["models"].values()}
        for path in PATHS:
            for shapes in SHAPES:
                if (path, shapes) not in present:
                    continue
                here = [c for c in cases if c.release == release and variant_of(c.full) == (path, shapes)]
                opened = sum(1 for c in here if c in still_open) or ""
                unexplained = sum(1 for c in here if c in untriaged) or ""
                run, *without = counts(data, "without", (path, shapes))
                _, *with_ = counts(data, "with", (path, shapes))
                lines.append(
                    f"| {release} | {torch_version} | {path} | {shapes} | {run} | {' / '.join(map(str, without))} "
                    f"| {' / '.join(map(str, with_))} | {not_run(data, (path, shapes)) or ''} "
                    f"| {opened} | {unexplained} | {_commits(data, (path, shapes))} |"
                )
                if path == "export":
                    reloaded, *r_without = counts(data, "reload_without", (path, shapes))
                    _, *r_with = counts(data, "reload_with", (path, shapes))
                    if reloaded:
                        lines.append(
                            f"| {release} | {torch_version} | export, reloaded | {shapes} | {reloaded} "
                            f"| {' / '.join(map(str, r_without))} | {' / '.join(map(str, r_with))} | | | | |"
                        )
    lines += [
        "",
        "Time per part (both sides; `part@path-shapes`), as measured by `python -m compat.campaign`:",
        "",
        "| release | parts measured |",
        "|---|---|",
    ]
    lines += [f"| {release} | {_part_cell(data)} |" for release, data in results.items()]
    lines += ["", "## Triage", "", "| rule | verdict | what | cases |", "|---|---|---|---|"]
    for rule in TRIAGE + EXPORT_RULES:
        covered = sum(1 for case in cases if case.rule is rule)
        lines.append(f"| `{rule.key}` | {rule.verdict} | {_cell(rule.reason)} | {covered} |")
    if still_open:
        lines += ["", "## OPEN DEFECTS", "", "Reduced to their cause (see the rule), but no patch fixes them yet:", ""]
        lines += _case_table(still_open)
    if untriaged:
        lines += ["", "## UNTRIAGED", "", "A rule in compat/make_differential.py must explain each of these:", ""]
        lines += _case_table(untriaged)
    lines += ["", "## Every failure and mismatch", ""]
    lines += _case_table(cases) if cases else ["None."]
    return "\n".join(lines) + "\n", untriaged + still_open


def _commits(data: dict, variant: Tuple[str, str]) -> str:
    """Which commits the release's models of one path and shapes were measured at, most models first. A file written
    before records kept their own commit was measured at the file's; in a file measured again since, such a record
    says "not recorded" (the file's commit is then that of its latest part)."""
    found: Dict[str, int] = {}
    whole_file = not any("commit" in record for record in data["models"].values())
    for record in data["models"].values():
        if variant_of(record) == variant:
            if "commit" in record:
                commit = str(record["commit"])[:7]
            else:
                commit = str(data.get("commit", "?"))[:7] if whole_file else "not recorded"
            found[commit] = found.get(commit, 0) + 1
    return ", ".join(f"{commit}: {count}" for commit, count in sorted(found.items(), key=lambda item: -item[1]))


def _case_table(cases: List[Case]) -> List[str]:
    rows = [
        "| release | model | path | shapes | side | result | first pass the value audit names | triage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in sorted(cases, key=lambda c: (parse_release(c.release), c.model, SIDES.index(c.side))):
        triage = f"`{case.rule.key}`" if case.rule else "**untriaged**"
        rows.append(
            f"| {case.release} | {case.full.get('model', case.model)} | {' | '.join(variant_of(case.full))} "
            f"| {case.side} | {case.record['status']}: {_difference(case.record)} "
            f"| {_named(case.record)} | {triage} |"
        )
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale or untriaged")
    args = parser.parse_args(argv)
    text, untriaged = render(load(args.results))
    for case in untriaged:
        what = f"open defect `{case.rule.key}`" if case.rule else "untriaged"
        print(f"{what}: {case.release} {case.model} ({case.side}): {case.record['status']}", file=sys.stderr)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m compat.make_differential", file=sys.stderr)
            return 1
        return 1 if untriaged else 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 1 if untriaged else 0


if __name__ == "__main__":
    sys.exit(main())

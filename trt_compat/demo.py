"""``trt-compat demo``: every fix that runs on torch alone, shown against eager PyTorch, then one line to act on.

A patch module may define ``demonstrate(say) -> List[Check]`` (torch only, never torch_tensorrt; small and fast). It
says what goes wrong upstream (``say(text)``: one paragraph, which the demo indents and wraps), reproduces that with
a clearly named stand-in for upstream's behaviour (its ``WITHOUT`` checks: the stand-in shows the defect, e.g. differs
from eager), runs trt_compat's own transformation and compares the result with eager PyTorch bit for bit (its
``WITH`` checks). The demo finds the patches as the rest of trt_compat does, runs every ``demonstrate`` (a new patch
needs no change here), lists the patches without one (their defects need Torch-TensorRT itself: ``trt-compat
verify``), applies what this environment needs as ``trt-compat`` does, prints the report and ends with the verdict:
one line to act on. Exit status 1 if a check fails. ``--json`` carries the checks, the patches not demonstrated, the
report and the verdict.

What demonstrations share lives here: :class:`Check`, and the embedded model that trips Torch-TensorRT
(``DefaultModel``: a SqueezeNet-style ``MaxPool2d(3, 2, ceil_mode=True)``, a SegNet-style pool whose indices feed
``MaxUnpool2d``, a head with two views where the later view is consumed first).
"""

import contextlib
import json
import operator
import sys
import textwrap
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Collection, List, Tuple

with warnings.catch_warnings():
    # CPU wheels of torch without numpy say so at import; nothing here uses numpy.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch
    from torch import nn

from . import _detect, _discovery
from ._report import APPLIED, DISABLED, NOT_INSTALLED, PENDING, Report

WITHOUT = "without"  # a check on the stand-in for upstream's behaviour: it shows the defect
WITH = "with"  # a check on trt_compat's result: exact


@dataclass
class Check:
    """One check of a demonstration: on the stand-in for upstream (``WITHOUT``: ok when it shows the defect) or on
    trt_compat's result (``WITH``: ok when it is exact)."""

    patch: str
    side: str
    check: str
    ok: bool
    detail: str = ""


@dataclass
class NotDemonstrated:
    patch: str
    reason: str


NEEDS_TORCH_TENSORRT = "needs Torch-TensorRT: run `trt-compat verify`"


class DefaultModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.MaxPool2d(2, return_indices=True)
        self.up = nn.MaxUnpool2d(2)
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor):
        x = torch.relu(self.conv(self.pool(torch.relu(self.stem(x)))))
        pooled, indices = self.down(x)
        x = self.up(pooled, indices, output_size=x.shape)
        per_channel = x.view(x.shape[0], 8, -1)
        flat = x.view(x.shape[0], -1)
        return self.head(flat), per_channel.amax(-1)


def example_input() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def exported_graph() -> torch.fx.GraphModule:
    """A fresh export of ``DefaultModel`` (the same weights every time)."""
    torch.manual_seed(0)
    model = DefaultModel().eval()
    with warnings.catch_warnings():
        # torch.export's own deprecation notices are not what this demonstration is about.
        warnings.simplefilter("ignore", FutureWarning)
        # An empty decomposition table: the graph keeps the ops the model calls (max_unpool2d, view, linear).
        return torch.export.export(model, (example_input(),)).run_decompositions({}).module()


def count(gm: torch.fx.GraphModule, targets: Collection) -> int:
    """How many call_function nodes of ``gm`` call one of ``targets``."""
    return sum(node.op == "call_function" and node.target in targets for node in gm.graph.nodes)


def identical(actual, expected) -> bool:
    """Whether two outputs (tensors, or tuples and lists of them) are equal bit for bit, dtype and shape included."""
    if isinstance(expected, (tuple, list)):
        return (
            isinstance(actual, (tuple, list))
            and len(actual) == len(expected)
            and all(identical(a, e) for a, e in zip(actual, expected))
        )
    return isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype and torch.equal(actual, expected)


def as_installed(wrapper: Callable, upstream: Callable) -> Callable:
    """``upstream`` with a patch's ``wrapper(wrapped, instance, args, kwargs)`` around it, called as the patch's
    ``apply`` installs it (``PatchContext.wrap_function``, ``wrap_decomposition``): for a demonstration to run the
    very wrapper a patch puts around upstream's function, here around its stand-in."""

    def wrapped(*args, **kwargs):
        return wrapper(upstream, None, args, kwargs)

    return wrapped


def disagreeing_vals(gm: torch.fx.GraphModule) -> int:
    """call_function nodes whose recorded val fake-tensor propagation does not reproduce (shape or dtype)."""
    from torch._guards import detect_fake_mode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    recorded = {n: n.meta.get("val") for n in gm.graph.nodes}
    placeholders = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder"]
    FakeTensorProp(gm, detect_fake_mode(placeholders)).propagate_dont_convert_inputs(*placeholders)
    wrong = 0
    for node, before in recorded.items():
        after = node.meta.get("val")
        node.meta["val"] = before
        if node.op == "call_function" and isinstance(after, torch.Tensor):
            if not isinstance(before, torch.Tensor) or before.shape != after.shape or before.dtype != after.dtype:
                wrong += 1
    return wrong


def single_output_pool(gm: torch.fx.GraphModule) -> torch.fx.Node:
    """The single-output max_pool2d of the pool whose indices are unused (the ceil-mode pool). torch 2.4's export
    still records it as max_pool2d_with_indices + getitem 0; there it is fused here as upstream's fusion does it
    (same arguments, the replaced node's metadata)."""
    for node in gm.graph.nodes:
        if node.target is torch.ops.aten.max_pool2d.default:
            return node
    for node in gm.graph.nodes:
        if node.target is torch.ops.aten.max_pool2d_with_indices.default and all(
            user.target is operator.getitem and user.args[1] == 0 for user in node.users
        ):
            with gm.graph.inserting_after(node):
                fused = gm.graph.call_function(torch.ops.aten.max_pool2d.default, node.args, node.kwargs)
            fused.meta = dict(node.meta)
            for user in list(node.users):
                user.replace_all_uses_with(fused)
                gm.graph.erase_node(user)
            gm.graph.erase_node(node)
            gm.recompile()
            return fused
    raise LookupError("the embedded model has no max pool whose indices are unused")


# ---------------------------------------------------------------------------------------------------------------
# Running the demonstrations


WIDTH = 116


def _wrapped(say: Callable[[str], None]) -> Callable[[str], None]:
    """``say`` for a demonstration: each paragraph it says indented under its heading and wrapped to ``WIDTH``."""

    def say_paragraph(text: str) -> None:
        for line in textwrap.wrap(
            text, WIDTH, initial_indent="   ", subsequent_indent="     ", break_long_words=False, break_on_hyphens=False
        ):
            say(line)

    return say_paragraph


def run_demonstrations(say: Callable[[str], None]) -> Tuple[List[Check], List[NotDemonstrated]]:
    """Every discovered patch's ``demonstrate``, in name order, numbered; and the patches that have none."""
    checks: List[Check] = []
    missing: List[NotDemonstrated] = []
    number = 0
    version, _ = _detect.target_version()
    release = _detect.release_of(version)
    for found in _discovery.discover():
        if not found.usable:
            missing.append(NotDemonstrated(found.name, found.error or found.unavailable))
            continue
        demonstrate = getattr(found.module, "demonstrate", None)
        if not callable(demonstrate):
            missing.append(
                NotDemonstrated(found.name, NEEDS_TORCH_TENSORRT + _discovery.did_you_mean(found.module, "demonstrate"))
            )
            continue
        number += 1
        unneeded = (
            f" (torch-tensorrt {version} does not need it)" if release and not found.patch.needed_on(release) else ""
        )
        say(f"{number}. {found.name}: {found.patch.title}{unneeded}")
        try:
            checks += demonstrate(_wrapped(say))
        except Exception as exc:  # one broken demonstration must not hide the others
            say(f"   the demonstration raised {type(exc).__name__}: {exc}")
            checks.append(Check(found.name, WITH, "the demonstration runs", False, f"{type(exc).__name__}: {exc}"))
        say("")
    return checks, missing


def _applied_report() -> Tuple[Report, str]:
    """What ``trt-compat`` reports: the report after applying what this environment needs, and strict mode's
    refusal ("" when none)."""
    import trt_compat

    try:
        # torch_tensorrt prints some import problems to stdout; keep stdout for the demo alone.
        with contextlib.redirect_stdout(sys.stderr):
            return trt_compat.apply(), ""
    except trt_compat.PatchError as exc:
        return trt_compat.report(), str(exc)


def needed_patches(report: Report) -> List[str]:
    """The patches the installed release needs, disabled or not (none when torch-tensorrt is not installed)."""
    release = _detect.release_of(report.versions.get("torch_tensorrt"))
    if release is None:
        return []
    return [found.name for found in _discovery.discover() if found.usable and found.patch.needed_on(release)]


def verdict(checks: List[Check], report: Report, needed: Collection[str], refusal: str = "") -> str:
    """One line a user can act on: whatever is wrong first (a check that failed, a patch this environment needs
    that is not in place), then what was shown, what this environment needs and the command to run next."""
    torch_version = report.versions.get("torch") or "?"
    said: List[str] = []
    wrong = sorted({c.patch for c in checks if not c.ok and c.side == WITH})
    unshown = sorted({c.patch for c in checks if not c.ok and c.side == WITHOUT} - set(wrong))
    if wrong:
        said.append(
            f"FAILED: trt_compat's fix differs from eager on torch {torch_version} ({', '.join(wrong)}): set "
            f"TRT_COMPAT_DISABLE={','.join(wrong)} and report the output above"
        )
    if unshown:
        said.append(
            f"NOT SHOWN: the stand-in for upstream no longer shows the defect on torch {torch_version} "
            f"({', '.join(unshown)}), so that demonstration proves nothing here: report the output above"
        )
    if refusal:
        said.append(refusal)
    problem, status = _environment(report, needed)
    if problem:
        said.append(problem)
    if not (wrong or unshown):
        shown = len({c.patch for c in checks})
        said.append(
            f"every transformation checked here is exact ({_counted(len(checks), 'check', 'checks')} of "
            f"{_counted(shown, 'patch', 'patches')})"
        )
    said.append(status)
    return "verdict: " + "; ".join(said)


def _counted(number: int, one: str, more: str) -> str:
    return f"{number} {one if number == 1 else more}"


def _environment(report: Report, needed: Collection[str]) -> Tuple[str, str]:
    """What is wrong with this environment's patches ("" when nothing), and its state with the command to run."""
    version = report.versions.get("torch_tensorrt")
    verify = "`trt-compat verify`"
    if version is None or all(p.state == NOT_INSTALLED for p in report.patches):
        return "", (
            f"torch-tensorrt is not installed: install it next to trt_compat and run {verify}, which reproduces each "
            "defect on that release without and with trt_compat"
        )
    release = f"torch-tensorrt {version}"
    if report.release_status == "untested":
        release += f" (newer than the tested releases, up to {report.newest_tested})"
    needs = f"{release} needs {len(needed)} of the {len(report.patches)} patches"
    pending = [p for p in report.patches if p.state == PENDING]
    if pending:
        return f"NOTHING PATCHED: {needs}, but {pending[0].reason}", f"fix that, then run {verify}"
    states = {p.name: p.state for p in report.patches}
    failed = [p.name for p in report.failed]
    missing = [f"{p.name} {p.state}" for p in report.failed] + [
        f"{name} disabled by TRT_COMPAT_DISABLE" if states.get(name) == DISABLED else f"{name} {states.get(name)}"
        for name in needed
        if states.get(name) != APPLIED and name not in failed
    ]
    if missing:
        return (
            f"NOT IN PLACE: {needs}, and these are not in place: {', '.join(missing)} (their defects are still there)",
            f"see the report above, then run {verify}",
        )
    if not needed:
        return "", f"{release} needs none of trt_compat's patches: {verify} confirms it on this install"
    return "", f"{needs}, all applied: run {verify} to reproduce each of its defects without and with them"


def run_demo(as_json: bool = False) -> int:
    import trt_compat

    # Text goes out as it is said; --json prints one document at the end.
    say: Callable[[str], None] = (lambda line: None) if as_json else print
    say(
        f"trt_compat {trt_compat.__version__} demo: each fix that runs on torch alone, against eager PyTorch, "
        f"torch {torch.__version__} (Torch-TensorRT is not needed)."
    )
    say("")
    checks, missing = run_demonstrations(say)
    for entry in missing:
        say(f"not demonstrated: {entry.patch}: {entry.reason}")
    ok = all(check.ok for check in checks)
    failing = [f"{c.patch}: {c.check}" for c in checks if not c.ok]
    say(f"all {len(checks)} checks passed" if ok else "SOME CHECKS FAILED: " + "; ".join(failing))
    say("")
    report, refusal = _applied_report()
    say("== this environment (trt-compat report)")
    say(str(report))
    line = verdict(checks, report, needed_patches(report), refusal)
    say("")
    say(line)
    if as_json:
        document = {
            "ok": ok,
            "checks": [asdict(c) for c in checks],
            "not_demonstrated": [asdict(m) for m in missing],
            "report": report.to_dict(),
            "verdict": line,
        }
        print(json.dumps(document, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_demo())

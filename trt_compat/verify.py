"""``trt-compat verify``: every patch's own reproducers, run against the installed torch_tensorrt without and with
trt_compat, so a deployment can check on its own machine that each defect its release has is fixed.

Each :class:`trt_compat.patching.Defect` is checked twice: with every patch reverted (does this install have the
defect?) and with every patch this release needs applied, as configured (is it fixed?). trt_compat is left as it
was found: applied wherever it was. With CUDA and TensorRT the reproducers build real engines and compare them with
eager PyTorch within a tolerance; without them they compile in dryrun and compare bit for bit.
"""

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional

from ._report import APPLIED, DISABLED

PRESENT = "present"
ABSENT = "absent"
NOT_APPLICABLE = "n/a"
ERROR = "error"
NOT_RUN = "not run"


@dataclass
class Outcome:
    status: str  # present / absent / n/a / error
    detail: str = ""
    seconds: float = 0.0


@dataclass
class DefectResult:
    key: str
    title: str
    patch: str
    without: Outcome
    with_trt_compat: Outcome
    patch_state: str = ""  # the patch's state in the report (applied, disabled, skipped, ...) for the "with" run

    @property
    def ok(self) -> bool:
        """Fixed where present, and every check could run."""
        return self.with_trt_compat.status in (ABSENT, NOT_APPLICABLE) and self.without.status != ERROR

    @property
    def verdict(self) -> str:
        if self.without.status == ERROR or self.with_trt_compat.status == ERROR:
            return "could not check"
        if self.without.status == NOT_APPLICABLE:
            return "n/a (not in this release)"
        if self.without.status == ABSENT:
            return "absent" if self.ok else f"{self.with_trt_compat.status} with trt_compat"
        if self.ok:
            return "fixed"
        if self.patch_state == DISABLED:
            return "NOT FIXED: patch disabled by TRT_COMPAT_DISABLE"
        if self.patch_state not in ("", APPLIED):
            return f"NOT FIXED: patch {self.patch_state} (see problems)"
        return "NOT FIXED"


@dataclass
class VerifyReport:
    versions: dict
    mode: str  # "tensorrt engines" or "dryrun"
    defects: List[DefectResult] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)  # why verify could not run at all, or patch problems

    @property
    def verified(self) -> bool:
        """Whether any reproducer ran (not when torch-tensorrt is missing or cannot be imported)."""
        return bool(self.defects)

    @property
    def ok(self) -> bool:
        return self.verified and not self.problems and all(result.ok for result in self.defects)

    @property
    def conclusion(self) -> str:
        if not self.verified:
            return "NOTHING VERIFIED: " + ("; ".join(self.problems) or "no patch declares a defect")
        return "all defects fixed" if self.ok else "NOT ALL DEFECTS FIXED (see above)"

    def to_dict(self) -> dict:
        return {
            "versions": self.versions,
            "mode": self.mode,
            "ok": self.ok,
            "verified": self.verified,
            "conclusion": self.conclusion,
            "problems": self.problems,
            "defects": [dict(asdict(r), verdict=r.verdict) for r in self.defects],
        }

    def __str__(self) -> str:
        lines = [
            f"torch-tensorrt {self.versions.get('torch_tensorrt') or 'not installed'}, torch "
            f"{self.versions.get('torch') or 'not installed'}; {self.mode}",
            "",
        ]
        if self.defects:
            rows = [("defect", "patch", "without trt_compat", "with trt_compat", "verdict")]
            rows += [(r.key, r.patch, _cell(r.without), _cell(r.with_trt_compat), r.verdict) for r in self.defects]
            widths = [max(len(row[i]) for row in rows) for i in range(4)]
            lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] for row in rows]
            details = [
                (r.key, side, outcome.detail)
                for r in self.defects
                for side, outcome in (("without", r.without), ("with", r.with_trt_compat))
                if outcome.detail
            ]
            if details:
                lines += ["", "details:"] + [f"  {key} ({side} trt_compat): {detail}" for key, side, detail in details]
            lines += [f"problem: {problem}" for problem in self.problems]
            lines.append("")
        lines.append(self.conclusion)  # with nothing verified, the problems are its reason
        return "\n".join(lines)


def _cell(outcome: Outcome) -> str:
    return f"{outcome.status} ({outcome.seconds:.1f} s)"


def _run(check: Any, probe: Any) -> Outcome:
    from ._errors import NotApplicable

    started = time.perf_counter()
    try:
        found = check(probe)
        outcome = Outcome(ABSENT) if found is None else Outcome(PRESENT, str(found))
    except NotApplicable as exc:
        outcome = Outcome(NOT_APPLICABLE, str(exc))
    except Exception as exc:  # a reproducer that breaks says so; it never takes verify down
        outcome = Outcome(ERROR, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}")
    outcome.seconds = round(time.perf_counter() - started, 2)
    return outcome


def verify() -> VerifyReport:
    """Run every defect's reproducer without and with trt_compat; trt_compat is applied again afterwards."""
    import trt_compat

    from . import _discovery, _engine
    from ._detect import installed_versions

    versions = installed_versions()
    report = VerifyReport(versions, NOT_RUN)
    if versions["torch_tensorrt"] is None:
        report.problems.append("torch-tensorrt is not installed: there is nothing to verify")
        return report
    refused = ""
    try:
        applied = trt_compat.apply()
    except trt_compat.PatchError as exc:  # strict mode refused something; the reproducers still run if they can
        refused = str(exc)
        applied = trt_compat.report()
    if sys.modules.get("torch_tensorrt") is None:
        reasons = {p.reason for p in applied.patches if p.reason.startswith("import torch_tensorrt failed")}
        report.problems.append(next(iter(reasons), refused or "torch_tensorrt cannot be imported"))
        return report
    if refused:  # it names every patch not in place, and any setting strict mode refuses
        report.problems.append(f"import torch_tensorrt succeeded, but {refused}")
    else:
        report.problems += [_engine.not_in_place(p.name, p.state, p.reason) for p in applied.failed]
    from .probing import Probe

    probe = Probe()
    report.mode = (
        "TensorRT engines on the GPU, compared with eager within 1e-2"
        if probe.on_gpu
        else "dryrun on the CPU (no GPU or TensorRT here): Torch-TensorRT's compiler runs, no engine is built; "
        "outputs compared with eager bit for bit"
    )
    defects = [
        (entry.name, defect) for entry in _discovery.discover() if entry.usable for defect in entry.patch.defects
    ]
    try:
        trt_compat.revert()
        without = [_run(defect.check, probe) for _, defect in defects]
    finally:
        try:
            applied = trt_compat.apply()
        except trt_compat.PatchError:  # strict mode refuses again what is already in the problems
            applied = trt_compat.report()
    with_ = [_run(defect.check, probe) for _, defect in defects]
    states = {p.name: p.state for p in applied.patches}
    report.defects = [
        DefectResult(defect.key, defect.title, name, before, after, states.get(name, ""))
        for (name, defect), before, after in zip(defects, without, with_)
    ]
    return report


def run_verify(as_json: bool = False) -> int:
    import contextlib

    # torch_tensorrt and the reproducers print progress; stdout is for the result alone.
    with contextlib.redirect_stdout(sys.stderr):
        report = verify()
    print(json.dumps(report.to_dict(), indent=2) if as_json else report)
    return 0 if report.ok else 1


def defect_result(report: VerifyReport, key: str) -> Optional[DefectResult]:
    return next((r for r in report.defects if r.key == key), None)

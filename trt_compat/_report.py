"""What trt_compat reports: the model (``Report``, ``PatchStatus``) and its two layouts (text and a dict).

Patch states, each with a reason in the report:

* ``applied``        in place on this release
* ``not_needed``     this release is outside the patch's range
* ``disabled``       switched off by TRT_COMPAT_DISABLE
* ``failed``         the patch raised while applying; rolled back (or its module could not be loaded)
* ``skipped``        inside its range, but its target is not what it expects (or the release is unknown)
* ``pending``        applied when torch_tensorrt is imported (not imported yet, or its import failed)
* ``reverted``       was applied, then trt_compat.revert() restored the originals
* ``not_installed``  torch-tensorrt (or torch) is not installed: nothing to patch
"""

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

APPLIED = "applied"
NOT_NEEDED = "not_needed"
DISABLED = "disabled"
FAILED = "failed"
SKIPPED = "skipped"
PENDING = "pending"
REVERTED = "reverted"
NOT_INSTALLED = "not_installed"
STATES = (APPLIED, NOT_NEEDED, DISABLED, FAILED, SKIPPED, PENDING, REVERTED, NOT_INSTALLED)
# Needed on this release but not in place: what strict mode refuses.
PROBLEM_STATES = (FAILED, SKIPPED)


@dataclass
class PatchStatus:
    name: str
    title: str
    issue: Optional[str]
    affects: str
    state: str
    reason: str = ""


@dataclass
class Setting:
    """One setting in force, and where its value comes from ("environment", "python", "default")."""

    name: str
    value: str
    source: str


@dataclass
class Report:
    versions: Dict[str, Optional[str]]
    patches: List[PatchStatus] = field(default_factory=list)
    strict: bool = False
    release_status: str = "unknown"  # "tested" / "untested" / "unknown": see trt_compat._tested
    trt_compat_version: str = ""
    settings: List[Setting] = field(default_factory=list)
    newest_tested: str = ""
    notes: List[str] = field(default_factory=list)  # problems worth reading first (shadowed install, bad settings)

    def to_dict(self) -> dict:
        return {
            "trt_compat": self.trt_compat_version,
            "versions": dict(self.versions),
            "strict": self.strict,
            "release_status": self.release_status,
            "settings": [asdict(s) for s in self.settings],
            "notes": list(self.notes),
            "patches": [asdict(p) for p in self.patches],
        }

    @property
    def failed(self) -> List[PatchStatus]:
        """Patches that were needed but are not in place: what strict mode refuses."""
        return [p for p in self.patches if p.state in PROBLEM_STATES]

    def __str__(self) -> str:
        v = self.versions
        tt = v.get("torch_tensorrt") or "not installed"
        if v.get("torch_tensorrt_distribution"):
            tt += f" ({v['torch_tensorrt_distribution']})"
        lines = [
            f"torch-tensorrt {tt}",
            f"torch          {v.get('torch') or 'not installed'}",
            f"tensorrt       {v.get('tensorrt') or 'not installed'}",
            f"release        {self._release_line()}",
            f"trt_compat     {self.trt_compat_version}" + (", strict mode" if self.strict else ""),
            "settings       " + (", ".join(f"{s.name}={s.value} ({s.source})" for s in self.settings) or "none"),
            "",
        ]
        width = max((len(p.name) for p in self.patches), default=0)
        for p in self.patches:
            reason = f"  ({p.reason})" if p.reason else ""
            lines.append(f"{p.name:<{width}}  {p.state:<13} {p.issue or 'not reported upstream'}{reason}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def _release_line(self) -> str:
        if self.release_status != "untested":
            return self.release_status
        applied = ", ".join(p.name for p in self.patches if p.state == APPLIED) or "none"
        return (
            f"untested release (tested: up to {self.newest_tested}); each patch decided by its version range and "
            f"its feature check; applied: {applied}"
        )

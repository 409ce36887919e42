"""What the export-path integration tests share: the engine stand-in as a fixture, and one measurement of a stateful
model -- compiled with ``Probe.compile_exported``, called three times in memory, and saved, loaded and called three
times in a serving process that never imports trt_compat -- compared with eager mode bit for bit.

Imported only where torch_tensorrt is installed (the integration suites).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

import pytest
import torch
import torch_tensorrt.dynamo._compiler as compiler

from tests.helpers.engine_standin import build_like_engines
from tests.helpers.stateful import CALLS, Case, compare_served, differences, eager_calls, state_differences, state_of
from trt_compat.probing import Probe, ServingError


def engines_standin(monkeypatch, release_row) -> List[List[str]]:
    """Every accelerated block the compile builds behaves as its TensorRT engine would (tests/helpers/engine_standin.py;
    test process only, the same with and without trt_compat); the writes made in place, per compile."""
    if release_row.dryrun == "absent":
        pytest.skip(f"torch-tensorrt {release_row.line} has no dryrun: dynamo.compile would build real engines")
    aliased: List[List[str]] = []
    original = compiler.compile_module

    @functools.wraps(original)  # a patch applied afterwards still sees compile_module's own signature
    def compile_module_as_engines(*args, **kwargs):
        partitioned = original(*args, **kwargs)
        aliased.append(build_like_engines(partitioned))
        return partitioned

    monkeypatch.setattr(compiler, "compile_module", compile_module_as_engines)
    return aliased


@dataclass
class Measured:
    """What differs from eager mode: in the compiling process, and in the serving process (or why it did not run)."""

    in_memory: List[str]
    served: List[str]
    serving_error: Optional[str] = None

    @property
    def kept(self) -> bool:
        return not self.in_memory and not self.served and self.serving_error is None


def measure(case: Case, **options) -> Measured:
    """Compile ``case``'s model through the export path (saving it before the first call), call it ``CALLS`` times
    and serve the saved program as many times; raises what the compile raised."""
    torch.manual_seed(0)
    probe = Probe()
    arguments = [case.arguments(call) for call in range(CALLS)]
    compiled = probe.compile_exported(case.model().eval(), *arguments[0], save=True, **options)
    expected = eager_calls(case)
    found = differences(compiled.output, expected[0][0], "call 0 output")
    for call in range(CALLS):
        if call:
            with torch.no_grad():
                found += differences(compiled(*arguments[call]), expected[call][0], f"call {call} output")
        found += state_differences(state_of(compiled.module, arguments[call]), expected[call][1], call)
    try:
        served = compare_served(case, probe.serve(compiled, [case.arguments(call) for call in range(CALLS)]))
    except ServingError as exc:
        return Measured(found, [], str(exc))
    return Measured(found, served)


KEPT = "kept"
LOST = "lost"

# Saved programs a release cannot load here with or without trt_compat, and why. Torch 2.9's deserializer refuses
# the int64 Parameter that constant folding leaves inside an unbuilt dryrun block (torch_tensorrt.load: "doesn't
# correspond to a valid Torchscript module or ExportedProgram"; torch.export.load's warning: "Only Tensors of
# floating point and complex dtype can require gradients"). A built engine holds its constants itself: this is a
# limit of dryrun here, not of a user's saved program.
DRYRUN_UNLOADABLE = {("2.9.0", "kv_slice"): r"doesn't correspond to a valid Torchscript module or ExportedProgram"}


def assert_kept(measured: Measured, release_line: str, name: str) -> None:
    """Every update kept in memory and by the served program (where the release can load a saved dryrun program)."""
    unloadable = DRYRUN_UNLOADABLE.get((release_line, name))
    if unloadable is not None:
        assert not measured.in_memory, measured
        assert measured.serving_error is not None and re.search(unloadable, measured.serving_error), measured
        pytest.skip(f"kept in memory; {release_line} cannot load a saved dryrun program of {name} (DRYRUN_UNLOADABLE)")
    assert measured.kept, measured


def assert_as_stated(measured: Measured, in_memory: str, served: str) -> None:
    """``in_memory`` and ``served``: KEPT, LOST (something differs from eager), or a regex of the serving error."""
    assert (not measured.in_memory) == (in_memory == KEPT), f"in memory, expected {in_memory}: {measured.in_memory}"
    if served in (KEPT, LOST):
        assert measured.serving_error is None, measured.serving_error
        assert (not measured.served) == (served == KEPT), f"served, expected {served}: {measured.served}"
    else:
        assert measured.serving_error is not None and re.search(served, measured.serving_error), measured


# TRT_COMPAT_RECORD_ROWS=1: a release without a row is measured and the row to add is the skip reason (pytest -rs).
RECORDING = os.environ.get("TRT_COMPAT_RECORD_ROWS") == "1"


def as_stated(measured: Measured) -> tuple:
    """``measured`` as a row states it: (in memory, served), each KEPT or LOST, or the serving error."""
    served = measured.serving_error or (LOST if measured.served else KEPT)
    return (LOST if measured.in_memory else KEPT, served)


def row(table: Dict[str, object], release_row, path: str, measured: object = None) -> object:
    """The release's row of ``table``; without one, a failure asking for it (with ``TRT_COMPAT_RECORD_ROWS=1``, a
    skip whose reason is ``measured``, what upstream did here, to be recorded)."""
    if release_row.line not in table:
        if RECORDING:
            pytest.skip(f"ROW {release_row.line} {os.path.basename(path)}: {measured!r}")
        pytest.fail(
            f"add a row for {release_row.line} to UPSTREAM in {path}: run its 'without trt_compat' tests with "
            "TRT_COMPAT_RECORD_ROWS=1 (pytest -rs shows each row to record) and record what upstream does (in memory "
            "and served) for each model"
        )
    return table[release_row.line]

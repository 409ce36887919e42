"""Releases the matrix has not run: the report says so, and the version ranges and feature checks still decide.

The detected version is faked (``trt_compat._detect.installed_versions``), and each real patch's ``apply`` is
replaced by a stub that records the call, so these run without Torch-TensorRT: what is under test is the
engine's decision and the report, not the patches themselves (tests/integration covers those).
"""

import types

import pytest

from trt_compat import _detect, _discovery, _engine, _tested
from trt_compat.patching import TargetChanged


@pytest.fixture
def fake_release(monkeypatch):
    """Pretend torch-tensorrt ``version`` is installed; returns the names of the patches whose apply() ran."""
    ran = []
    real = [(found.patch, found.module) for found in _discovery.discover()]

    def stub(patch, behaviour):
        def apply(ctx):
            ran.append(patch.name)
            behaviour(patch, ctx)

        return types.SimpleNamespace(PATCH=patch, apply=apply)

    def install(version, behaviour=lambda patch, ctx: None):
        versions = {
            "torch_tensorrt": version,
            "torch_tensorrt_distribution": "torch-tensorrt" if version else None,
            "torch": "2.99.0",
            "tensorrt": "11.9.0",
        }
        monkeypatch.setattr(_detect, "installed_versions", lambda: dict(versions))
        monkeypatch.setattr(_engine, "_records", {})
        monkeypatch.setattr(
            _discovery, "_found", [_discovery.Found(patch.name, patch, stub(patch, behaviour)) for patch, _ in real]
        )
        monkeypatch.delenv("TRT_COMPAT_DISABLE", raising=False)
        monkeypatch.delenv("TRT_COMPAT_STRICT", raising=False)
        return ran

    return install


def states(report):
    return {p.name: p.state for p in report.patches}


def expected_states(release):
    """Each discovered patch's state on ``release`` by its own declared range (the engine's decision alone)."""
    return {e.name: "applied" if e.patch.needed_on(release) else "not_needed" for e in _discovery.discover()}


def applied_on(release):
    return [name for name, state in expected_states(release).items() if state == "applied"]


OPEN_ENDED = expected_states((2, 99, 0))


def test_future_release_is_untested_and_gets_the_open_ended_patches(fake_release):
    ran = fake_release("2.99.0")
    report = _engine.apply_patches()
    assert report.release_status == "untested"
    assert report.to_dict()["release_status"] == "untested"
    assert states(report) == OPEN_ENDED
    assert sorted(ran) == applied_on((2, 99, 0))
    text = str(report)
    newest = ".".join(map(str, max(_tested.TESTED_RELEASES)))
    assert (
        f"release        untested release (tested: up to {newest}); each patch decided by its version range "
        f"and its feature check; applied: {', '.join(applied_on((2, 99, 0)))}"
    ) in text


def test_nightly_counts_as_its_release_for_the_decisions_but_is_untested(fake_release):
    fake_release("2.15.0.dev20270101+cu130")
    report = _engine.apply_patches()
    assert report.release_status == "untested"
    assert states(report) == OPEN_ENDED
    assert "untested release" in str(report)


def test_nightly_of_an_affected_release_gets_the_bounded_patch(fake_release):
    ran = fake_release("2.5.0.dev20240901+cu124")
    report = _engine.apply_patches()
    assert report.release_status == "untested"
    assert sorted(ran) == applied_on((2, 5, 0)) and "view_to_reshape_metadata" in ran
    assert f"applied: {', '.join(applied_on((2, 5, 0)))}" in str(report)


def test_feature_check_still_decides_on_an_untested_release(fake_release):
    moved_patch = applied_on((2, 99, 0))[-1]

    def moved(patch, ctx):
        if patch.name == moved_patch:
            raise TargetChanged("no post-lowering pass list")

    fake_release("2.99.0", moved)
    report = _engine.apply_patches()
    assert states(report) == {**OPEN_ENDED, moved_patch: "skipped"}
    assert "target changed: no post-lowering pass list" in {p.name: p.reason for p in report.patches}[moved_patch]
    assert str(report).splitlines()[3].endswith(f"applied: {', '.join(applied_on((2, 99, 0))[:-1])}")


@pytest.mark.parametrize("version", [".".join(map(str, r)) for r in _tested.TESTED_RELEASES] + ["2.14.0+cu130"])
def test_tested_releases_say_tested(fake_release, version):
    fake_release(version)
    report = _engine.apply_patches()
    assert report.release_status == "tested"
    assert "release        tested" in str(report)


@pytest.mark.parametrize("version", [None, "not-a-version"])
def test_unknown_release(fake_release, version):
    fake_release(version)
    report = _engine.build_report()
    assert report.release_status == "unknown"
    assert report.to_dict()["release_status"] == "unknown"


def test_tested_releases_are_the_verified_matrix_rows():
    from tests.harness import releases

    verified = {r.version_tuple for r in releases.RELEASES.values() if r.verified}
    assert set(_tested.TESTED_RELEASES) == verified

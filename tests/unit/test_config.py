"""Settings that cannot be understood are never silent: a warning naming the accepted values, in strict mode an error.
No Torch-TensorRT: the installed version is faked and the real patches are replaced by recording stubs.
"""

import logging
import types

import pytest

import trt_compat
from tests.helpers.settings import TYPOS
from trt_compat import _config, _detect, _discovery, _engine, audit


@pytest.fixture
def installed(monkeypatch):
    """Pretend torch-tensorrt ``version`` is installed, with stub patches; returns the names applied."""
    ran = []
    real = [entry for entry in _discovery.discover() if entry.usable]

    def install(version="2.5.0"):
        versions = {
            "torch_tensorrt": version,
            "torch_tensorrt_distribution": "torch-tensorrt",
            "torch": "2.5.1",
            "tensorrt": None,
        }
        monkeypatch.setattr(_detect, "installed_versions", lambda: dict(versions))
        monkeypatch.setattr(_engine, "_records", {})
        stubs = [
            _discovery.Found(
                e.name, e.patch, types.SimpleNamespace(PATCH=e.patch, apply=lambda ctx, name=e.name: ran.append(name))
            )
            for e in real
        ]
        monkeypatch.setattr(_discovery, "_found", stubs)
        monkeypatch.setattr(_config, "_warned", set())
        monkeypatch.setattr(audit, "_api_switch", None)  # as if no test had switched the audit from Python
        for name in ("TRT_COMPAT_DISABLE", "TRT_COMPAT_STRICT", "TRT_COMPAT_AUDIT", "TRT_COMPAT_POOL_INDICES"):
            monkeypatch.delenv(name, raising=False)
        return ran

    return install


def states(report):
    return {p.name: p.state for p in report.patches}


@pytest.mark.parametrize("spelling", ["tuple-pooling", "TUPLE_POOLING", " Tuple-Pooling "])
def test_patch_names_in_disable_ignore_case_and_dashes(installed, monkeypatch, spelling):
    installed()
    monkeypatch.setenv("TRT_COMPAT_DISABLE", spelling)
    assert states(_engine.apply_patches())["tuple_pooling"] == "disabled"


@pytest.mark.parametrize("value", ["0", "none", "false", "no", "off", "", " None ", "OFF"])
def test_the_spellings_of_off_in_disable_disable_nothing_even_in_strict_mode(installed, monkeypatch, value):
    ran = installed()
    monkeypatch.setenv("TRT_COMPAT_DISABLE", value)
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    report = _engine.apply_patches()  # strict mode: would raise if the value were taken for a patch name
    assert "disabled" not in states(report).values() and report.notes == []
    assert "tuple_pooling" in ran


def test_an_unknown_name_in_disable_is_a_warning_naming_the_known_ones(installed, monkeypatch, caplog):
    ran = installed()
    monkeypatch.setenv("TRT_COMPAT_DISABLE", "tupel_pooling")
    with caplog.at_level(logging.WARNING, logger="trt_compat"):
        report = _engine.apply_patches()
    assert "tuple_pooling" in ran  # nothing was disabled
    assert "TRT_COMPAT_DISABLE names unknown patch(es) tupel_pooling; known: " in caplog.text
    assert "tuple_pooling" in caplog.text.split("known: ")[1]
    assert any("tupel_pooling" in note for note in report.notes)


def test_an_unknown_name_in_disable_is_an_error_in_strict_mode(installed, monkeypatch):
    installed()
    monkeypatch.setenv("TRT_COMPAT_DISABLE", "tupel_pooling")
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with pytest.raises(trt_compat.PatchError, match="unknown patch"):
        _engine.apply_patches()


@pytest.mark.parametrize("value", ["2", "y", "enabled"])
def test_an_unrecognised_strict_value_counts_as_on_and_is_itself_an_error(installed, monkeypatch, value):
    installed()
    monkeypatch.setenv("TRT_COMPAT_STRICT", value)
    assert _config.read_config().strict
    with pytest.raises(trt_compat.PatchError, match=f"TRT_COMPAT_STRICT='{value}' is not one of"):
        _engine.apply_patches()


@pytest.mark.parametrize(
    "value, strict",
    [("", False), ("0", False), ("off", False), ("No", False), ("1", True), ("TRUE", True), ("on", True)],
)
def test_recognised_strict_values(monkeypatch, value, strict):
    monkeypatch.setenv("TRT_COMPAT_STRICT", value)
    config = _config.read_config()
    assert (config.strict, config.problems) == (strict, ())


def test_an_unparseable_version_is_a_warning_and_patches_nothing(installed, caplog):
    ran = installed("not-a-version")
    with caplog.at_level(logging.WARNING, logger="trt_compat"):
        report = _engine.apply_patches()
    assert ran == [] and set(states(report).values()) == {"skipped"}
    assert "cannot tell which release torch_tensorrt 'not-a-version' is" in caplog.text


def test_an_epoch_version_is_not_mistaken_for_a_tested_release(installed):
    ran = installed("1!2.5.0")
    report = _engine.apply_patches()
    assert ran == [] and report.release_status == "unknown"


def test_the_report_shows_the_settings_in_force(installed, monkeypatch):
    installed()
    monkeypatch.setenv("TRT_COMPAT_POOL_INDICES", "torch")
    report = _engine.build_report()
    settings = {s.name: (s.value, s.source) for s in report.settings}
    assert settings["pool_indices"] == ("torch", "environment")
    assert settings["strict"] == ("off", "default") and settings["audit"] == ("off", "default")
    assert report.to_dict()["trt_compat"] == trt_compat.__version__
    assert f"trt_compat     {trt_compat.__version__}" in str(report)


def test_a_torch_tensorrt_without_metadata_is_reported_by_its_module_version(installed, monkeypatch):
    """A source tree has no package metadata; the report used to say "not installed" next to applied patches."""
    ran = installed()
    monkeypatch.setattr(
        _detect,
        "installed_versions",
        lambda: {"torch_tensorrt": None, "torch_tensorrt_distribution": None, "torch": "2.5.1", "tensorrt": None},
    )
    monkeypatch.setitem(__import__("sys").modules, "torch_tensorrt", types.SimpleNamespace(__version__="2.5.0"))
    report = _engine.apply_patches()
    assert report.versions["torch_tensorrt"] == "2.5.0" and "tuple_pooling" in ran
    assert any("has no package metadata" in note for note in report.notes)


# The setting falls back, the problem names the variable, the value and the accepted values, and strict mode raises it.
@pytest.mark.parametrize("variable", sorted(TYPOS))
def test_a_setting_not_understood_is_one_warning_a_note_and_the_fallback(installed, monkeypatch, caplog, variable):
    ran = installed()
    value, said = TYPOS[variable]
    monkeypatch.setenv(variable, value)
    with caplog.at_level(logging.WARNING, logger="trt_compat"):
        report = _engine.apply_patches()
        _engine.build_report()
    notes = [note for note in report.notes if note.startswith(said[0])]
    assert len(notes) == 1 and all(text in notes[0] for text in said), report.notes
    assert caplog.text.count(notes[0]) == 1  # once, though the settings are read at every apply and report
    settings = {s.name: (s.value, s.source) for s in report.settings}
    assert settings["pool_indices"] == ("tensorrt", "default") and settings["audit"] == ("off", "default")
    assert "tuple_pooling" in ran


@pytest.mark.parametrize("variable", sorted(TYPOS))
def test_a_setting_not_understood_is_an_error_in_strict_mode(installed, monkeypatch, variable):
    installed()
    value, said = TYPOS[variable]
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("TRT_COMPAT_STRICT", "1")
    with pytest.raises(trt_compat.PatchError) as raised:
        _engine.apply_patches()
    assert str(raised.value).startswith(f"trt_compat (strict mode): {said[0]}")
    assert all(text in str(raised.value) for text in said)


def test_the_audit_problem_lists_every_accepted_spelling(monkeypatch):
    monkeypatch.setenv("TRT_COMPAT_AUDIT", "value")
    problem = audit.environment_problem()
    for spelling in ("1/true/yes/on", "metadata", "values", "metadata,values", "all", "0/false/no/off"):
        assert spelling in problem, spelling

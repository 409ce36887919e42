"""The differential campaign's parts that need no Torch-TensorRT: the seeded graph generator (the same models every
run, every op family drawn, every model valid in eager), the bit-exact comparison with eager, and the triage of
compat/make_differential.py (a result no rule explains fails the generator; a "fixed by" rule does not excuse a
problem that remains with its patch applied; --check finds a stale file).
"""

import json
import math

import pytest
import torch

from compat import campaign, generated, make_differential

COUNT = 60  # enough for every family at least once (the campaign draws 200)


def test_generated_models_are_the_same_every_time():
    for index in (0, 7, 41):
        first_model, (first_input,) = generated.build(0, index)
        second_model, (second_input,) = generated.build(0, index)
        assert torch.equal(first_input, second_input)
        first_state, second_state = first_model.state_dict(), second_model.state_dict()
        assert first_state.keys() == second_state.keys()
        assert all(torch.equal(first_state[key], second_state[key]) for key in first_state)
        with torch.no_grad():
            assert torch.equal(first_model(first_input.clone()), second_model(second_input.clone()))
        assert generated.describe(0, index) == generated.describe(0, index)
    assert generated.describe(0, 1).text != generated.describe(0, 2).text
    assert generated.describe(1, 1).text != generated.describe(0, 1).text


def test_generated_models_draw_every_family_and_run_in_eager():
    texts = " ".join(generated.describe(0, index).text for index in range(COUNT))
    markers = {
        "views": ".view(",
        "permute": ".permute(",
        "contiguous": ".contiguous()",
        "clone and in place": "y = x.clone(); y.mul_(",
        "input updated in place": "the graph's input, in place",
        "index assignment": "x = x.clone(); x[:, :, ",
        "strided slice": "x[:, :, ::2]",
        "max pool with indices": "return_indices=True",
        "max pool without indices": "MaxPool2d(kernel_size",
        "average pool": "AvgPool2d(",
        ".item() of a parameter": ".item()",
        "dtype cast": ".half().float()",
        "attention": "sdpa(",
    }
    missing = [family for family, marker in markers.items() if marker not in texts]
    assert not missing, f"not drawn in the first {COUNT} models: {missing}"
    for index in range(0, COUNT, 6):
        model, (x,) = generated.build(0, index)
        with torch.no_grad():
            assert torch.isfinite(model(x)).any(), generated.describe(0, index).text


def test_only_models_with_item_calls_capture_scalars():
    for index in range(COUNT):
        spec = generated.describe(0, index)
        assert spec.scalar_capture == (".item()" in spec.text), spec.text


def test_generated_names_round_trip():
    assert generated.find(generated.name_of(3, 17)) == (3, 17)
    assert generated.find("resnet18") is None


@pytest.mark.parametrize(
    "actual, expected, difference, relative, exact",
    [
        (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")]), 0.0, 0.0, True),
        (torch.tensor([-0.0, 2.0]), torch.tensor([0.0, 2.0]), 0.0, 0.0, False),  # the sign of zero counts
        (torch.tensor([1.0, 3.0]), torch.tensor([1.0, 4.0]), 1.0, 0.25, False),
        (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]), math.inf, math.inf, False),
    ],
)
def test_comparison_with_eager_is_bit_exact(actual, expected, difference, relative, exact):
    found, found_relative, where = campaign.compare([("output 0", actual)], [("output 0", expected)])
    assert (found, found_relative) == (difference, relative)
    assert (where == "") == exact and (exact or where.startswith("output 0: "))


def test_comparison_names_what_differs_first():
    same, other = torch.zeros(2), torch.ones(2)
    found = campaign.compare([("output 0", same), ("input 0", other)], [("output 0", same), ("input 0", same)])
    assert found[0] == 1.0 and found[2].startswith("input 0: 2 of 2 elements differ")
    assert campaign.compare([("output 0", same)], [("output 0", same), ("buffer b", same)])[0] == math.inf


def test_an_unknown_family_or_model_is_an_error():
    with pytest.raises(SystemExit, match="unknown family or model 'no_such_model'"):
        campaign.select(["no_such_model"], 0, 0)


def test_selection_by_family_and_name():
    cases = campaign.select(["smoke", "gen-0-0003"], 5, 0)
    assert [case.name for case in cases] == ["cnn_pool_indices", "transformer_views", "mixed", "gen-0-0003"]
    assert [case.family for case in cases][-1] == "generated"


# -- triage ---------------------------------------------------------------------------------------------------------
def side(status, **fields):
    return dict({"status": status, "seconds": 0.1}, **fields)


def results(tmp_path, models, release="2.14.0"):
    folder = tmp_path / "differential"
    folder.mkdir(exist_ok=True)
    data = {"release": release, "versions": {"torch": "2.14.1"}, "parts": {}, "models": models}
    (folder / f"{release}.json").write_text(json.dumps(data))
    return folder


def fold_finding(what="output 0"):
    return {
        "pass": "fold_get_attr_item_calls",
        "phase": "pre-AOT",
        "what": what,
        "node": "add",
        "difference": 1.0,
        "detail": "6 of 6 elements differ",
        "inputs": "the compile's real inputs",
    }


def test_every_problem_is_triaged_or_the_generator_fails(tmp_path, capsys):
    models = {
        "clone": {
            "family": "generated",
            "without": side("mismatch", max_difference=1.0, where="call 1, output 0: ...", audit=[fold_finding()]),
            "with": side("ok", patches=["keep_identity_ops"]),
        },
        "mystery": {
            "family": "generated",
            "without": side(
                "mismatch", max_difference=0.5, relative_difference=0.5, where="call 1, output 0: ...", audit=[]
            ),
            "with": side("ok", patches=[]),
        },
    }
    output = tmp_path / "DIFFERENTIAL.md"
    code = make_differential.main(["--results", str(results(tmp_path, models)), "--output", str(output)])
    text = output.read_text()
    assert code == 1 and "## UNTRIAGED" in text
    untriaged = text.split("## UNTRIAGED")[1].split("## Every")[0]
    assert "| 2.14.0 | mystery | compile | static | without | mismatch" in untriaged
    assert "| 2.14.0 | clone | compile | static | without | mismatch" in text and "`identity_ops_clone`" in text
    assert "untriaged: 2.14.0 mystery (without): mismatch" in capsys.readouterr().err


def test_a_fix_does_not_excuse_a_problem_that_remains_with_its_patch_applied(tmp_path):
    still_wrong = side("mismatch", max_difference=1.0, where="call 1, output 0: ...", audit=[fold_finding()])
    models = {"clone": {"family": "generated", "without": still_wrong, "with": dict(still_wrong, patches=[])}}
    cases = make_differential.problems(make_differential.load(results(tmp_path, models)))
    assert [(case.side, case.rule.key) for case in cases] == [
        ("without", "identity_ops_clone"),
        ("with", "identity_ops_clone"),
    ]
    models["clone"]["with"]["patches"] = ["keep_identity_ops"]
    cases = make_differential.problems(make_differential.load(results(tmp_path, models)))
    assert [(case.side, case.rule and case.rule.key) for case in cases] == [
        ("without", "identity_ops_clone"),
        ("with", None),
    ]


def test_a_rule_covers_only_its_releases(tmp_path):
    models = {
        "clone": {"family": "generated", "without": side("mismatch", where="call 1, output 0", audit=[fold_finding()])}
    }
    (case,) = make_differential.problems(make_differential.load(results(tmp_path, models, release="2.11.0")))
    assert case.rule is None


def test_check_mode_finds_a_stale_file(tmp_path):
    folder = results(tmp_path, {"fine": {"family": "smoke", "without": side("ok"), "with": side("ok")}})
    output = tmp_path / "DIFFERENTIAL.md"
    assert make_differential.main(["--results", str(folder), "--output", str(output), "--check"]) == 1
    assert make_differential.main(["--results", str(folder), "--output", str(output)]) == 0
    assert make_differential.main(["--results", str(folder), "--output", str(output), "--check"]) == 0
    assert "| 2.14.0 | 2.14.1 | compile | static | 1 | 1 / 0 / 0 | 1 / 0 / 0 |" in output.read_text()


def test_an_open_defect_is_listed_apart_and_still_fails_the_generator(tmp_path, monkeypatch):
    rule = make_differential.Rule(
        key="some_open_defect", status="mismatch", open_defect=True, first_pass="aot_export_joint_simple", reason="r"
    )
    monkeypatch.setattr(make_differential, "TRIAGE", (rule,))
    aot = dict(fold_finding(), **{"pass": "aot_export_joint_simple", "phase": "AOT tracing"})
    wrong = side("mismatch", max_difference=4.0, where="call 1, output 0", audit=[aot])
    models = {"gen-0-0001": {"family": "generated", "note": "x = x.clone(); ...", "without": wrong}}
    output = tmp_path / "DIFFERENTIAL.md"
    assert make_differential.main(["--results", str(results(tmp_path, models, "2.5.0")), "--output", str(output)]) == 1
    text = output.read_text()
    assert "## OPEN DEFECTS" in text and "## UNTRIAGED" not in text and "`some_open_defect`" in text


def test_the_scatter_layout_mismatch_is_fixed_by_its_patch(tmp_path):
    aot = dict(fold_finding(), **{"pass": "aot_export_joint_simple", "phase": "AOT tracing"})
    wrong = side("mismatch", max_difference=4.0, where="call 1, output 0", audit=[aot])
    models = {
        "gen-0-0001": {"family": "generated", "note": "x = x.clone(); x[:, 0] += x[:, -1]; ...", "without": wrong}
    }
    output = tmp_path / "DIFFERENTIAL.md"
    assert make_differential.main(["--results", str(results(tmp_path, models, "2.5.0")), "--output", str(output)]) == 0
    assert "| 2.5.0 | gen-0-0001 | compile | static | without |" in output.read_text()
    assert "`select_scatter_layout` |" in output.read_text()


def test_the_committed_report_is_current():
    """compat/DIFFERENTIAL.md is what make_differential renders from the committed results (compat/differential)."""
    text, _ = make_differential.render(make_differential.load(make_differential.RESULTS))
    assert make_differential.OUTPUT.read_text() == text, "run python -m compat.make_differential"


def test_each_variant_and_the_reloads_are_counted_apart(tmp_path):
    ok, failed = side("ok"), side("failed", error="RuntimeError: boom")
    models = {
        "fine": {"family": "smoke", "without": ok, "with": ok},
        "fine@export-dynamic": {
            "family": "smoke",
            "model": "fine",
            "path": "export",
            "shapes": "dynamic",
            "without": ok,
            "with": ok,
            "reload_without": failed,
            "reload_with": ok,
        },
        "fine@compile-dynamic": {"family": "smoke", "model": "fine", "path": "compile", "shapes": "dynamic"},
    }
    text, unexplained = make_differential.render(make_differential.load(results(tmp_path, models)))
    assert "| 2.14.0 | 2.14.1 | compile | static | 1 | 1 / 0 / 0 | 1 / 0 / 0 |" in text
    assert "| 2.14.0 | 2.14.1 | compile | dynamic | 0 | 0 / 0 / 0 | 0 / 0 / 0 | 1 |" in text
    assert "| 2.14.0 | 2.14.1 | export, reloaded | dynamic | 1 | 0 / 0 / 1 | 1 / 0 / 0 |" in text
    assert [(case.model, case.side) for case in unexplained] == [("fine@export-dynamic", "reload_without")]
    assert "| 2.14.0 | fine | export | dynamic | reload_without | failed: RuntimeError: boom |" in text


def test_a_rule_covers_only_its_paths_shapes_and_sides(tmp_path, monkeypatch):
    rule = make_differential.Rule(
        key="export_only", status="failed", paths=("export",), shapes=("static",), sides=("with",), reason="r"
    )
    monkeypatch.setattr(make_differential, "TRIAGE", (rule,))
    failed = side("failed", error="x")
    record = {"family": "smoke", "model": "m", "path": "export", "shapes": "static", "without": failed}
    models = {"m@export-static": dict(record, **{"with": failed}), "m": {"family": "smoke", "with": failed}}
    cases = make_differential.problems(make_differential.load(results(tmp_path, models)))
    assert sorted((case.model, case.side, case.rule and case.rule.key) for case in cases) == [
        ("m", "with", None),
        ("m@export-static", "with", "export_only"),
        ("m@export-static", "without", None),
    ]


def test_dynamic_inputs_are_resized_and_keep_their_values_valid():
    from compat import variants

    ids = torch.tensor([[5, 6, 7, 8]])
    x = torch.randn(2, 3)
    dynamic = variants.Dynamic(axes={0: {1: "seq"}, 1: {0: "batch"}}, sizes={"seq": (4, 6, 2), "batch": (2, 3, 5)})
    resized = variants.resized((ids, x), dynamic, 1, seed=0)
    assert resized[0].tolist() == [[5, 6, 7, 8, 5, 6]] and resized[1].shape == (3, 3)
    assert variants.resized((ids, x), dynamic, 1, seed=0)[1].equal(resized[1])  # the same every run
    assert dynamic.bound("seq") == (2, 6)
    assert variants.batch_axis((torch.zeros(2, 3), torch.zeros(2), torch.zeros(3))).axes == {
        0: {0: "batch"},
        1: {0: "batch"},
    }
    assert variants.key("resnet18", "compile", "static") == "resnet18"
    assert variants.key("resnet18", "export", "dynamic") == "resnet18@export-dynamic"


def test_model_libraries_are_pinned_for_every_torch_of_the_matrix():
    from compat import model_libraries
    from tests.harness import releases

    for release in releases.RELEASES.values():
        no_deps, deps = model_libraries.pins_for(release.torch)
        assert {name.split("==")[0] for name in no_deps} == {"timm", "transformers"}
        assert all("==" in pin for pin in no_deps + deps) and not any(p.startswith("torch") for p in deps)
    assert model_libraries.pins_for("2.14.1")[0] == ["timm==1.0.31", "transformers==5.23.0"]
    assert model_libraries.pins_for("2.4.1+cu121")[0] == ["timm==1.0.9", "transformers==4.44.2"]

"""The generated documentation is up to date: compat/TABLE.md and the README's generated sections are what
compat/make_table.py renders from the results and the discovered patches (a new patch shows up in the README's
table as soon as it lands)."""

from compat import make_table


def test_generated_tables_are_current(capsys):
    assert make_table.main(["--check"]) == 0, capsys.readouterr().out


def test_every_discovered_patch_is_in_the_readme():
    from trt_compat import _discovery

    readme = (make_table.REPO / "README.md").read_text()
    for entry in _discovery.discover():
        assert f"| `{entry.name}` |" in readme, entry.name


def test_every_patch_option_has_a_documented_variable_with_its_values_and_default():
    """--help and the README render trt_compat/_environment.py; a patch option must have its row there."""
    from trt_compat import _discovery, _environment

    rows = {variable.name: variable.text for variable in _environment.VARIABLES}
    options = [option for entry in _discovery.discover() if entry.usable for option in entry.patch.options]
    assert options, "no patch declares an option: this test checks nothing"
    for option in options:
        assert option.env in rows, f"add a row for {option.env} to trt_compat/_environment.py"
        assert f"`{option.default}` (default)" in rows[option.env], option.env
        for choice in option.choices:
            assert f"`{choice}`" in rows[option.env], (option.env, choice)
    core = {"TRT_COMPAT_DISABLE", "TRT_COMPAT_STRICT", "TRT_COMPAT_AUDIT"}
    assert set(rows) == core | {option.env for option in options}, "a row for a variable nothing reads"

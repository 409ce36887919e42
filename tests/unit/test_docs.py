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

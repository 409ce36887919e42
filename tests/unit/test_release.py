"""A release is a commit on main that sets the version and dates its CHANGELOG section; users pin that commit or a
wheel built from it. These tests fail when the version, the CHANGELOG, the compatibility tables and the README's
pinning instructions disagree, or when a released CHANGELOG section is edited afterwards."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from trt_compat import __version__

REPO = Path(__file__).resolve().parents[2]
CHANGELOG = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
RELEASED = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", re.M)


def released_sections(text: str) -> dict:
    """version -> its CHANGELOG section, heading to the next heading."""
    headings = list(re.finditer(r"^## \[", text, re.M)) + [None]
    sections = {}
    for heading, following in zip(headings, headings[1:]):
        body = text[heading.start() : following.start() if following else len(text)]
        match = RELEASED.match(body.splitlines()[0])
        if match:
            sections[match.group(1)] = body
    return sections


def test_the_changelog_starts_with_unreleased_then_the_version_of_this_checkout():
    headings = re.findall(r"^## \[([^\]]+)\]", CHANGELOG, re.M)
    assert headings[0] == "Unreleased", "changes since the last release go under [Unreleased], at the top"
    assert headings[1] == __version__, (
        f"trt_compat/_version.py says {__version__}, the newest released CHANGELOG section is {headings[1]}: a "
        "release commit sets both"
    )


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def history():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout (an sdist or an installed copy): no history to compare with")
    try:
        _git("log", "-1", "--format=%H")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"git cannot read this checkout's history: {exc.stderr.strip()}")
    return _git


def test_released_sections_are_never_edited(history):
    """Each released section reads as it did in the commit that dated it (its release commit)."""
    for version, section in released_sections(CHANGELOG).items():
        heading = section.splitlines()[0]
        dated_by = history("log", "--reverse", "--format=%H", "-S", heading, "--", "CHANGELOG.md").split()
        if not dated_by:
            pytest.fail(f"no commit dated {heading!r}: a release is a commit that dates its section")
        then = released_sections(history("show", f"{dated_by[0]}:CHANGELOG.md")).get(version)
        assert then == section, (
            f"the [{version}] section differs from what its release commit {dated_by[0][:12]} says: released "
            "sections are never edited; put later changes under [Unreleased]"
        )


def test_the_compatibility_rows_were_measured_with_this_version():
    rows = {path.stem: json.loads(path.read_text()) for path in sorted((REPO / "compat" / "results").glob("*.json"))}
    assert rows
    measured = {release: data["versions"]["trt_compat"] for release, data in rows.items()}
    assert set(measured.values()) == {__version__}, (
        f"compat/results rows measured with trt_compat {measured}, this checkout is {__version__}: re-run the "
        "matrix at the release commit (nox -t matrix)"
    )


def test_the_readmes_pinned_version_is_this_version():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    mentioned = set(re.findall(r"trt_compat-(\d+\.\d+\.\d+)-py3-none-any\.whl", readme))
    mentioned |= set(re.findall(r"trt-compat==(\d+\.\d+\.\d+)", readme))
    mentioned |= set(re.findall(r"Release (\d+\.\d+\.\d+)", readme))
    assert mentioned == {__version__}, f"the README pins {sorted(mentioned)}, this checkout is {__version__}"


def test_the_commits_pinned_for_a_release_all_have_its_code(history):
    """The README pins the newest commit whose subject starts 'Release X.Y.Z'; the matrix is measured at the first
    (the one that sets the version) and recorded after it. Whatever is pinned must be the code that was measured."""
    if history("rev-parse", "--is-shallow-repository").strip() == "true":
        pytest.skip("a shallow clone has not got the release commits")
    commits = history("log", "--reverse", "--format=%H", "--grep", f"^Release {__version__}").split()
    assert commits, f"no commit on this branch has a subject starting 'Release {__version__}'"
    code = ["trt_compat", "patches", "pyproject.toml", "setup.py"]
    changed = history("diff", "--name-only", commits[0], commits[-1], "--", *code).split()
    assert not changed, (
        f"the commits pinned as release {__version__} ({commits[0][:12]} .. {commits[-1][:12]}) differ in {changed}: "
        "code changed after the release commit is a new release"
    )


def test_the_readmes_pinning_commands_install_the_release(history, tmp_path):
    """The README's commands, with this machine's paths: find the release commit of this version, install it by a
    direct git reference, then build a wheel from it and install that hash-checked, each into a fresh venv."""
    import sys
    import venv

    if history("rev-parse", "--is-shallow-repository").strip() == "true":
        pytest.skip("a shallow clone has not got the release commit")
    release = history("log", "-1", "--format=%H", "--grep", f"^Release {__version__}").strip()
    assert release, f"no commit on this branch has a subject starting 'Release {__version__}'"
    assert f'"{__version__}"' in history("show", f"{release}:trt_compat/_version.py")

    def fresh_venv(name: str) -> Path:
        venv.EnvBuilder(with_pip=True).create(tmp_path / name)
        return tmp_path / name / "bin"

    def run(*command: str) -> str:
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    direct = fresh_venv("direct")
    run(str(direct / "pip"), "install", "-q", f"git+file://{REPO}@{release}")
    assert run(str(direct / "trt-compat"), "--version").strip() == f"trt_compat {__version__}"

    checkout = tmp_path / "release"
    history("worktree", "add", "--detach", str(checkout), release)
    try:
        run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(checkout), "-w", str(tmp_path / "dist"))
    finally:
        history("worktree", "remove", "--force", str(checkout))
    wheel = tmp_path / "dist" / f"trt_compat-{__version__}-py3-none-any.whl"
    digest = run(sys.executable, "-m", "pip", "hash", str(wheel)).split()[-1]
    assert digest.startswith("--hash=sha256:")
    (tmp_path / "requirements.txt").write_text(f"{wheel} {digest}\n")
    hashed = fresh_venv("hashed")
    run(str(hashed / "pip"), "install", "-q", "--require-hashes", "-r", str(tmp_path / "requirements.txt"))
    assert run(str(hashed / "trt-compat"), "--version").strip() == f"trt_compat {__version__}"

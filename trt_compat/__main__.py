"""The command line: ``trt-compat`` or ``python -m trt_compat``."""

import argparse
import contextlib
import json
import os
import sys

DESCRIPTION = "Version-aware fixes for Torch-TensorRT compiler defects: what is installed, and what trt_compat did."

EPILOG = """\
commands:
  report   (default) apply what this environment needs and print the report; exit 1 in strict mode when a needed
           patch is not in place or a setting is not understood
  verify   run each patch's own reproducer against the installed torch_tensorrt, without and with trt_compat;
           exit 1 when a defect this release has is not fixed, or nothing could be verified
  demo     each fix that runs on torch alone, against eager PyTorch, then what this environment needs and the
           command to run next (needs only torch); exit 1 when a check fails

A reader that stops early (trt-compat | head -1) ends the output quietly; the exit status is the command's own.

"""


def _parser(prog: str) -> argparse.ArgumentParser:
    from ._environment import help_text
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG + help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trt_compat {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{report,verify,demo}")
    for name, text in (
        ("report", "apply what this environment needs and print the report (the default)"),
        ("verify", "reproduce each defect on the installed torch_tensorrt, without and with trt_compat"),
        ("demo", "each fix that runs on torch alone, against eager PyTorch, then a verdict (needs only torch)"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        # SUPPRESS: `trt-compat --json report` keeps the --json given before the command.
        command.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output on stdout"
        )
    parser.add_argument("--json", action="store_true", help="machine-readable report (the report command)")
    return parser


def _program_name() -> str:
    """``trt-compat`` when run through the console script, else ``python -m trt_compat``."""
    return "trt-compat" if os.path.basename(sys.argv[0] or "").startswith("trt-compat") else "python -m trt_compat"


def _shadowed() -> str:
    """Why the imported ``trt_compat`` is not this package (an empty folder of that name shadows it), or ""."""
    package = sys.modules.get("trt_compat")
    if package is not None and getattr(package, "__file__", None) is None:
        folders = ", ".join(getattr(package, "__path__", [])) or "?"
        return (
            f"`import trt_compat` finds the folder {folders}, which is not the trt_compat package (no "
            "__init__.py): it shadows the installed trt_compat, so nothing is patched. Run from another "
            "directory, or rename that folder."
        )
    return ""


class _ReaderMayLeave:
    """stdout for the command line, whose reader may stop reading early (``trt-compat | head -1``).

    Then the rest of the output is dropped: no BrokenPipeError traceback, and the exit status stays the command's
    own (what it found, not whether anyone read all of it), so ``set -o pipefail`` pipelines get the same answer
    whoever reads the output.
    """

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            _discard_output(self._stream)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _discard_output(self._stream)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _discard_output(stream) -> None:
    """Point the stream's file descriptor at the null device (Python's recipe for a closed pipe): what it still
    buffers, and Python's own flush of stdout at exit, then go nowhere instead of raising again."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a StringIO in tests): nothing is left to flush
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


def main(argv=None) -> int:
    stdout = sys.stdout
    sys.stdout = _ReaderMayLeave(stdout)
    try:
        return _run(argv)
    finally:
        sys.stdout.flush()
        sys.stdout = stdout


def _run(argv) -> int:
    args = _parser(_program_name()).parse_args(argv)
    command = args.command or "report"
    problem = _shadowed()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if command == "demo":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            print(
                "error: the demo runs trt_compat's graph transformations with torch, which is not installed "
                "(pip install torch)",
                file=sys.stderr,
            )
            return 2
        from .demo import run_demo

        return run_demo(as_json=args.json)
    if command == "verify":
        from .verify import run_verify

        return run_verify(as_json=args.json)
    return _report(as_json=args.json)


def _report(as_json: bool) -> int:
    import trt_compat

    strict_failure = False
    try:
        # torch_tensorrt prints some import problems to stdout; keep stdout for the report alone.
        with contextlib.redirect_stdout(sys.stderr):
            report = trt_compat.apply()
    except trt_compat.PatchError as exc:  # strict mode: a patch or setting refused, or torch_tensorrt failed to import
        print(exc, file=sys.stderr)
        strict_failure = True
        report = trt_compat.report()
    print(json.dumps(report.to_dict(), indent=2) if as_json else report)
    return 1 if strict_failure or (report.strict and report.failed) else 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m trt_compat``: what is installed and what trt_compat did about it.

    python -m trt_compat [--json]   apply what this environment needs and report it (exit 1 in strict mode
                                    when a patch failed)
    python -m trt_compat demo       run the demonstration on the embedded default model
"""
import argparse
import contextlib
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trt_compat", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", choices=["report", "demo"], default="report")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    args = parser.parse_args(argv)

    import trt_compat

    if args.command == "demo":
        from .demo import run_demo

        return run_demo()
    strict_failure = False
    try:
        # torch_tensorrt prints some import problems to stdout; keep stdout for the report alone.
        with contextlib.redirect_stdout(sys.stderr):
            report = trt_compat.apply()
    except trt_compat.PatchError as exc:  # strict mode: a patch failed, or torch_tensorrt failed to import
        print(exc, file=sys.stderr)
        strict_failure = True
        report = trt_compat.report()
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 1 if strict_failure or (report.strict and report.failed) else 0


if __name__ == "__main__":
    sys.exit(main())

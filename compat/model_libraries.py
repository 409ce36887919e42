"""The model libraries of the campaign's timm and transformers families, pinned per torch, and their installation.

    python -m compat.model_libraries install      (with a release's harness python: installs that torch's pins)
    python -m compat.model_libraries show         (the pins for the running torch)

timm and transformers are installed with ``--no-deps`` (timm requires torch and torchvision, which must stay the
release's own), then their light dependencies, which need no torch, by exact version; torch's version is checked
before and after. Nothing is downloaded at run time: every model is built from a config with random weights
(``HF_HUB_OFFLINE=1``). Standard library only.

Rows are chosen by torch's minor version: the newest row not newer than it (the oldest row for older torch). The
rows were measured on the releases named in their comment; a release between two rows uses the older row's pins.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

# torch minor -> (packages installed with --no-deps, their dependencies installed as pinned).
PINS: Dict[Tuple[int, int], Tuple[List[str], List[str]]] = {
    # Torch-TensorRT 2.4.0 (torch 2.4.1); transformers of that summer (StaticCache with key_cache lists).
    (2, 4): (
        ["timm==1.0.9", "transformers==4.44.2"],
        [
            "huggingface-hub==0.24.7",
            "safetensors==0.4.5",
            "tokenizers==0.19.1",
            "pyyaml==6.0.2",
            "regex==2024.9.11",
            "tqdm==4.66.5",
            "requests==2.32.3",
        ],
    ),
    # Torch-TensorRT 2.5.0 (torch 2.5.1).
    (2, 5): (
        ["timm==1.0.12", "transformers==4.47.1"],
        [
            "huggingface-hub==0.27.1",
            "safetensors==0.4.5",
            "tokenizers==0.21.0",
            "pyyaml==6.0.2",
            "regex==2024.11.6",
            "tqdm==4.67.1",
            "requests==2.32.3",
        ],
    ),
    # Torch-TensorRT 2.12.1 (torch 2.12.1) and 2.14.0 (torch 2.14.1): transformers 5 (StaticCache layers).
    (2, 12): (
        ["timm==1.0.31", "transformers==5.23.0"],
        [
            "huggingface-hub==1.33.0",
            "safetensors==0.8.0",
            "tokenizers==0.23.3",
            "pyyaml==6.0.4",
            "regex==2026.12.2",
            "tqdm==4.70.1",
            "typer==0.29.2",
        ],
    ),
}


def minor(version: str) -> Tuple[int, int]:
    parts = version.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def pins_for(torch_version: str) -> Tuple[List[str], List[str]]:
    wanted = minor(torch_version)
    rows = sorted(PINS)
    chosen = max((row for row in rows if row <= wanted), default=rows[0])
    return PINS[chosen]


def _torch_version(python: str) -> str:
    done = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('torch'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def install(python: Optional[str] = None) -> int:
    python = python or sys.executable
    torch_before = _torch_version(python)
    no_deps, deps = pins_for(torch_before)
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + ["--no-deps", *no_deps], check=True)
    subprocess.run(pip + deps, check=True)
    torch_after = _torch_version(python)
    if torch_after != torch_before:
        print(f"model libraries: torch changed from {torch_before} to {torch_after}", file=sys.stderr)
        return 1
    print(f"model libraries for torch {torch_before}: {' '.join(no_deps)} (+ {' '.join(deps)})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("install", "show"))
    parser.add_argument("--python", help="the interpreter to install for (default: this one)")
    args = parser.parse_args(argv)
    if args.action == "install":
        return install(args.python)
    no_deps, deps = pins_for(_torch_version(args.python or sys.executable))
    print("\n".join(no_deps + deps))
    return 0


if __name__ == "__main__":
    sys.exit(main())

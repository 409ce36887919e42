"""Packaging for trt_compat.

`patches/` sits at the top of the repository (one file per upstream defect) but is installed as
`trt_compat.patches`, so no top-level module named `patches` ever reaches site-packages.
"""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "trt_compat" / "_version.py").read_text()).group(1)

setup(
    name="trt-compat",
    version=VERSION,
    description="Version-aware fixes for known Torch-TensorRT compiler defects, applied only where needed",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.9",
    packages=["trt_compat", "trt_compat.patches"],
    package_dir={"trt_compat": "trt_compat", "trt_compat.patches": "patches"},
    install_requires=["wrapt>=1.14", "packaging>=21"],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
    entry_points={"console_scripts": ["trt-compat=trt_compat.__main__:main"]},
)

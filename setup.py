"""Packaging for trt_compat: the metadata lives in pyproject.toml; this file only builds the long description.

The README links to other files of the repository by relative path; on a package index those links lead nowhere,
so in the long description each such link becomes its text followed by the file's name (the files ship in the
source distribution).
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent


def long_description() -> str:
    text = (HERE / "README.md").read_text(encoding="utf-8")
    return re.sub(r"\[([^\]]+)\]\((?!https?://|#)([^)]+)\)", r"\1 (`\2` in the source distribution)", text)


setup(long_description=long_description(), long_description_content_type="text/markdown")

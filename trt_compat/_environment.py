"""Every environment variable trt_compat reads, documented once.

``trt-compat --help`` and the README's "Environment variables" table (a section compat/make_table.py generates) are
both rendered from :data:`VARIABLES`, and the spellings in it are the constants the settings are parsed with. A
patch option's row is written here (--help must not import torch to discover the patches); tests/unit/test_docs.py
fails while an option has no row, or its row misses one of its values.
"""

from typing import NamedTuple, Sequence

from ._config import DISABLE_ALL, DISABLE_ENV, DISABLE_NONE, OFF, ON, STRICT_ENV
from .audit import ALL, METADATA, VALUES
from .audit import ENV as AUDIT_ENV


class Variable(NamedTuple):
    name: str
    text: str  # Markdown: `code` spans, shown without the backquotes by --help


def _spelled(words: Sequence[str]) -> str:
    return "/".join(f"`{word}`" for word in words)


RULE = (
    "A value trt_compat cannot understand is logged once as a warning, listed in the report's notes, and the "
    "fallback given here applies; in strict mode `import torch_tensorrt` and `trt_compat.apply()` raise "
    "`trt_compat.PatchError` naming the variable, the value and the accepted values (`trt-compat` exits 1)."
)

VARIABLES = (
    Variable(
        DISABLE_ENV,
        f"{_spelled(DISABLE_ALL)}: apply no patch. {_spelled(DISABLE_NONE)} or empty: disable none. Otherwise a "
        "comma-separated list of patch names (case and `-`/`_` do not matter): skip those. An unknown name is "
        "ignored; the warning names the known ones.",
    ),
    Variable(
        STRICT_ENV,
        f"{_spelled(ON)}: a patch that fails to apply (or to revert), a patch skipped inside its range, an "
        "installed torch_tensorrt that cannot be imported under `trt_compat.apply()`, or a setting trt_compat cannot "
        f"understand raises `trt_compat.PatchError`. {_spelled(OFF)} or unset: off. Any other value counts as on.",
    ),
    Variable(
        AUDIT_ENV,
        f"{_spelled(ON)} or `{METADATA}`: the metadata audit; `{VALUES}`: the value audit; `{METADATA},{VALUES}` "
        f"or `{ALL}`: both (a comma-separated list). {_spelled(OFF)} or unset: off, and free. A word not understood "
        "is ignored and never switches on another audit: `value` alone means no audit.",
    ),
    Variable(
        "TRT_COMPAT_POOL_INDICES",
        "`tensorrt` (default): max-pool indices and `max_unpool` in ops TensorRT converts. `torch`: indices from a "
        "PyTorch op, unpooling left as is (several engines). Read at every compile; "
        '`trt_compat.set_pool_indices("torch"/"tensorrt"/None)` overrides it from Python. Any other value: the '
        "default.",
    ),
)


def markdown_table() -> str:
    """The README's table (with the rule above it)."""
    rows = [f"| `{variable.name}` | {variable.text} |" for variable in VARIABLES]
    return "\n".join([RULE, "", "| variable | effect |", "|---|---|", *rows]) + "\n"


def help_text(width: int = 116) -> str:
    """The environment section of ``--help``."""
    import textwrap

    def wrapped(text: str, indent: str) -> list:
        return textwrap.wrap(
            _plain(text), width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
        )

    lines = ["environment:"] + wrapped(RULE, "  ")
    for variable in VARIABLES:
        lines += [f"  {variable.name}"] + wrapped(variable.text, " " * 6)
    return "\n".join(lines) + "\n"


def _plain(markdown: str) -> str:
    return markdown.replace("`", "")

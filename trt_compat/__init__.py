"""trt_compat: fixes for known Torch-TensorRT compiler defects, applied only on the releases that have them.

``import trt_compat`` imports neither torch nor torch_tensorrt: it registers a post-import hook that applies the
needed patches right after ``torch_tensorrt`` is imported, or at once if it already is.
"""

import os as _os

from ._errors import PatchError, TargetChanged
from ._version import __version__

__all__ = [
    "PatchError",
    "TargetChanged",
    "__version__",
    "apply",
    "revert",
    "report",
    "report_dict",
    "is_applied",
    "get_original",
    "set_option",
    "get_option",
    "set_pool_indices",
    "get_pool_indices",
]


def apply():
    """Import torch_tensorrt (when installed) and apply every patch its release needs; returns the report."""
    import sys

    from . import _engine

    imported = sys.modules.get("torch_tensorrt") is not None
    try:
        # Also when it is in sys.modules: if another thread is still importing it, this waits for that import
        # to finish (whose hook then applies the patches) rather than patching a half-initialized package
        # while that thread's hook waits for trt_compat's lock.
        with _engine.hook_errors_collected() as refused:
            import torch_tensorrt  # noqa: F401  (the post-import hook applies the patches)
    except Exception as exc:  # not installed, blocked, or an install whose own import fails
        _engine.note_import_failure(exc)
        _engine.check_settings()  # strict mode refuses a setting it cannot understand even with nothing to patch
        return _engine.build_report()
    if refused:  # strict mode: torch_tensorrt imported, but trt_compat refuses what it could not do
        raise refused[0]
    return _engine.apply_patches() if imported else _engine.build_report()


def revert():
    """Restore every original object that trt_compat replaced; returns the report."""
    from . import _engine

    return _engine.revert_patches()


def report():
    """Detected versions, settings and, per patch, its state and the reason (a :class:`trt_compat._report.Report`)."""
    from . import _engine

    return _engine.build_report()


def report_dict():
    return report().to_dict()


def is_applied(name):
    """Whether patch ``name`` is in place (``"tuple_pooling"``, ``"Tuple-Pooling"``: spelled as for
    TRT_COMPAT_DISABLE)."""
    from . import _engine

    return _engine.context_of(name) is not None


def get_original(name, target):
    """The object patch ``name`` replaced, e.g. ``get_original("tuple_partition_inputs",
    "torch_tensorrt.dynamo.partitioning.construct_submodule_inputs")``; None when it is not applied."""
    from . import _engine

    context = _engine.context_of(name)
    return None if context is None else context.originals.get(target)


def set_option(name, value):
    """Set a patch's option for later compiles (e.g. ``set_option("pool_indices", "torch")``); ``None`` goes back
    to its environment variable. Raises ValueError for an unknown option or value (imports the patches)."""
    from . import _engine

    _engine.find_option(name).set(value)


def get_option(name):
    """The value a patch's option has for the next compile."""
    from . import _engine

    return _engine.find_option(name).value()


def set_pool_indices(mode):
    """Where later compiles compute max-pool indices and unpooling: ``"tensorrt"`` (default: in ops
    Torch-TensorRT converts, so pool and unpool share one engine) or ``"torch"`` (in PyTorch blocks).
    Takes precedence over ``TRT_COMPAT_POOL_INDICES``; ``None`` goes back to it. Read at each compile."""
    set_option("pool_indices", mode)


def get_pool_indices():
    """The pool indices mode the next compile will use: ``"tensorrt"`` or ``"torch"``."""
    return get_option("pool_indices")


# The first line of this project's patches/__init__.py. Another project's patches/ folder next to a vendored copy
# of trt_compat must never be mistaken for ours: its modules would be imported as trt_compat patches.
CHECKOUT_MARKER = '"""trt_compat: fixes for upstream Torch-TensorRT defects'


def _find_patches_in_checkout():
    # Installs put trt_compat.patches inside the package; a source checkout keeps it in ../patches. Running from
    # the checkout's root (`python -m trt_compat demo` after `pip install .`) imports this directory, not the
    # installed copy, so let it find its patches there too.
    if _os.path.isdir(_os.path.join(__path__[0], "patches")):
        return
    root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    try:
        with open(_os.path.join(root, "patches", "__init__.py"), encoding="utf-8") as init:
            ours = init.read(len(CHECKOUT_MARKER)) == CHECKOUT_MARKER
    except OSError:
        return
    if ours:
        __path__.append(root)


def _on_torch_tensorrt_imported(module):
    try:
        from . import _engine
    except Exception:
        # A broken trt_compat install (a missing or damaged file) must not fail the user's `import torch_tensorrt`.
        import logging

        from ._config import read_config

        logging.getLogger("trt_compat").warning("trt_compat: cannot load its engine; nothing patched", exc_info=True)
        if read_config().strict:
            raise PatchError("trt_compat (strict mode): cannot load its engine; nothing patched") from None
        return
    _engine.on_torch_tensorrt_imported(module)


def _on_torch_serializer_imported(_module):
    # A program saved after trt_compat rewrote its graph may call trt_compat's own ops (trt_compat::max_pool_indices);
    # torch.export.load needs them defined, with or without torch_tensorrt. Importing the patch modules defines them
    # (they import torch, never torch_tensorrt). torch imports its serializer only when a program is saved or loaded.
    try:
        from . import _discovery

        if not _discovery.in_progress():
            _discovery.discover()
    except Exception:
        import logging

        logging.getLogger("trt_compat").warning(
            "trt_compat: cannot define its ops for torch.export.load", exc_info=True
        )


def _activate():
    from ._import_hook import when_imported

    when_imported("torch_tensorrt", _on_torch_tensorrt_imported)
    when_imported("torch._export.serde.serialize", _on_torch_serializer_imported)


_find_patches_in_checkout()
_activate()

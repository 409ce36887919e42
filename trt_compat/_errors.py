class TargetChanged(Exception):
    """The installed Torch-TensorRT does not have what a patch needs to replace; the patch is skipped."""


class PatchError(RuntimeError):
    """Raised in strict mode (TRT_COMPAT_STRICT=1) when a patch could not be applied or reverted."""

class TargetChanged(Exception):
    """The installed Torch-TensorRT does not have what a patch needs to replace; the patch is skipped."""


class NotApplicable(Exception):
    """A defect's reproducer finds that this release does not have the code the defect lives in."""


class PatchError(RuntimeError):
    """Raised in strict mode (TRT_COMPAT_STRICT=1) when a patch could not be applied or reverted."""

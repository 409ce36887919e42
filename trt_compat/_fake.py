"""Running ops on fake tensors the way torch.export does, for the passes and the audit."""

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def running_on_fake(mode: Any) -> Iterator[None]:
    """``mode`` (a FakeTensorMode) entered with the Python dispatcher on, as torch.export runs its fake tensors.

    With the Python dispatcher, composite ops such as ``aten.reshape`` decompose through their Python
    implementations, which handle symbolic sizes; without it, torch 2.8's C++ ``reshape`` asks a tensor with
    a symbolic batch size for its ``numel()`` and raises.
    """
    from torch._dispatch.python import enable_python_dispatcher

    with enable_python_dispatcher(), mode:
        yield

"""Peak memory a call allocates through torch: what a write-back costs beyond the caller's own tensors."""

from __future__ import annotations

from typing import Any, Callable

import torch


def peak_bytes(call: Callable[[], Any]) -> int:
    """The peak, over ``call()``, of the bytes torch's CPU allocator has handed out during it and not taken back.

    Read from the profiler's memory records (each op's own allocations and frees, in time order), which see into
    compiled code too: a dispatch mode would make torch.compile run the function eagerly instead.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        call()
    live = peak = 0
    # Each op's own allocations net of its own frees (counted when it ends, after its children), and the frees that
    # happen outside any op.
    for event in sorted(profile.events(), key=lambda event: event.time_range.end):
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak

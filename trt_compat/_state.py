"""The one lock of trt_compat's mutable state: the applied patches and the audit's wrappers both edit the same
lowering pass lists, so the engine and the audit take this lock, which neither owns.

Re-entrant: the post-import hook fires inside ``apply()`` itself when that call imports torch_tensorrt.
importlib.reload() of this module keeps the lock, or a reload half-way would let two threads in at once.
"""

import threading

LOCK = globals().get("LOCK") or threading.RLock()

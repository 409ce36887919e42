"""Run a callback right after a module has been imported, or at once if it already has been.

The same idea as wrapt's post-import hooks, written here because importing wrapt 2.x pulls in asyncio and
importlib.metadata (about 60 ms), and ``import trt_compat`` has to stay nearly free.
"""
import sys
import threading

# typing is not imported: it alone would double the cost of `import trt_compat`.
# importlib.reload() re-runs this file in the same namespace: registered hooks, the lock and the finder already
# on sys.meta_path are kept, or a reload before `import torch_tensorrt` would silently leave it unpatched.
_hooks = globals().get("_hooks", {})  # module name -> [callable(module)]
_lock = globals().get("_lock") or threading.Lock()


class _NotifyingLoader:
    """Delegates to the real loader and runs the hooks once the module's code has executed."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_hooks(self._name, sys.modules.get(self._name, module))


class _PostImportFinder:
    """Sits first on sys.meta_path; for a watched name it asks the other finders and wraps their loader."""

    def __init__(self):
        self._searching = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _hooks or getattr(self._searching, fullname, False):
            return None
        from importlib.util import find_spec

        setattr(self._searching, fullname, True)
        try:
            spec = find_spec(fullname)
        finally:
            setattr(self._searching, fullname, False)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(spec.loader, fullname)
        return spec


_finder = globals().get("_finder") or _PostImportFinder()


def _run_hooks(name, module):
    for hook in list(_hooks.get(name, ())):
        hook(module)


def when_imported(name, hook):
    """Call ``hook(module)`` right after top-level module ``name`` is imported, or now if it already is."""
    with _lock:
        _hooks.setdefault(name, []).append(hook)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
    if name in sys.modules:
        hook(sys.modules[name])

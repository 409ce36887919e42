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
        # importlib.reload() finds the module's own spec, whose loader is already ours (perhaps from before a
        # reload of this file): wrap the real loader once, or the hooks would run once per reload so far.
        loader = spec.loader
        while type(loader).__name__ == "_NotifyingLoader":
            loader = loader._loader
        spec.loader = _NotifyingLoader(loader, fullname)
        return spec


_finder = globals().get("_finder") or _PostImportFinder()


def _run_hooks(name, module):
    for hook in list(_hooks.get(name, ())):
        hook(module)


def when_imported(name, hook):
    """Call ``hook(module)`` right after module ``name`` is imported, or now if it already is.

    A hook registered again (the same function, or its new version after ``importlib.reload`` of its module) takes
    the place of the earlier registration instead of running twice. ``sys.modules[name] = None`` (an import blocked
    on purpose) is not an imported module.
    """
    key = (getattr(hook, "__module__", None), getattr(hook, "__qualname__", None))
    with _lock:
        hooks = [
            h for h in _hooks.get(name, ()) if (getattr(h, "__module__", None), getattr(h, "__qualname__", None)) != key
        ]
        _hooks[name] = hooks + [hook]
        if not any(type(f).__name__ == "_PostImportFinder" for f in sys.meta_path):
            sys.meta_path.insert(0, _finder)
    module = sys.modules.get(name)
    if module is not None:
        hook(module)

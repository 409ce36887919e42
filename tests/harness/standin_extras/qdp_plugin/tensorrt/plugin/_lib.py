"""TEST STAND-IN for `tensorrt.plugin._lib`: no QDP plugin is registered (an empty registry)."""
QDP_REGISTRY = {}

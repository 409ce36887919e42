"""Settings typos users made, and what the message about each must say (the unit and integration tests share them)."""

# variable -> (the value set, texts the problem must contain: the variable with its value first, then the accepted
# values)
TYPOS = {
    "TRT_COMPAT_POOL_INDICES": ("gpu", ["TRT_COMPAT_POOL_INDICES='gpu'", "is not one of tensorrt, torch"]),
    "TRT_COMPAT_AUDIT": ("value", ["TRT_COMPAT_AUDIT='value'", "is not an audit", "values", "metadata,values", "all"]),
}

"""compat: the compatibility matrix results and the generator of its tables."""

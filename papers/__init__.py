"""One package per paper: a recipe over the shared core, its configs and its README."""

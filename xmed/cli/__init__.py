"""Command-line entry points (``xmed-data`` and, with their features, the Hydra commands)."""

"""Hydra configs of the xmed commands, shipped inside the package (read through ``pkg://xmed.configs``)."""

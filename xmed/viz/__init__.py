"""Pictures for people: overlays, grids, plots."""

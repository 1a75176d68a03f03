"""One loader module per upstream dataset format. ``pas.data.loaders`` re-exports the public loaders."""

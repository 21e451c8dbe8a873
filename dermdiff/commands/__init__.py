"""Sub-commands of the `dermdiff` console script (see `dermdiff.cli`)."""

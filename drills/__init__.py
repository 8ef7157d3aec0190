"""drproof's drill runner: YAML scenario → validated model → timeline → results."""

"""drproof's backup engine: components, runtimes, faults, repositories and the drill journal.

The engine knows nothing about YAML, pytest or HTML so that it can be driven on its own
(standalone backup/recovery) as well as by the drill runner in :mod:`drills`.
"""

__version__ = "0.1.0"

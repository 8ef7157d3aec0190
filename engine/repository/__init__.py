"""Backup repositories, by ``type:`` name: one module per backend, one ``register`` line here.

Each backend holds its settings model and opener (:mod:`engine.repository.settings`);
the format layer they all share is :mod:`engine.repository.base`.
"""

from engine.registry import Registry
from engine.repository.base import Repository
from engine.repository.local import LocalRepository
from engine.repository.s3 import S3Repository
from engine.repository.settings import Backend, BackendSettings, OpenContext

repositories: Registry[type[Backend]] = Registry("repository type")
repositories.register(LocalRepository)
repositories.register(S3Repository)


def open_repository(settings: BackendSettings, ctx: OpenContext) -> Repository:
    """The repository ``settings`` describe, opened by the backend whose settings model they are."""
    for backend in repositories:
        if type(settings) is backend.Settings or isinstance(settings, backend.Settings):
            return backend.open(settings, ctx)
    raise KeyError(f"no repository backend takes {type(settings).__name__}")


__all__ = [
    "Backend",
    "BackendSettings",
    "LocalRepository",
    "OpenContext",
    "Repository",
    "S3Repository",
    "open_repository",
    "repositories",
]

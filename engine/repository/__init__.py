"""Backup repositories, by ``type:`` name."""

from engine.registry import Registry
from engine.repository.base import Repository
from engine.repository.local import LocalRepository

repositories: Registry[type[Repository]] = Registry("repository type")
repositories.register(LocalRepository)

__all__ = ["LocalRepository", "Repository", "repositories"]

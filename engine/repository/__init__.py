"""Backup repositories, by ``type:`` name."""

from engine.registry import Registry
from engine.repository.base import Repository
from engine.repository.local import LocalRepository
from engine.repository.s3 import S3Repository

repositories: Registry[type[Repository]] = Registry("repository type")
repositories.register(LocalRepository)
repositories.register(S3Repository)

__all__ = ["LocalRepository", "Repository", "S3Repository", "repositories"]

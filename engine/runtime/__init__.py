"""Runtimes, by the name used in ``stack.runtime``."""

from engine.registry import Registry
from engine.runtime.base import PostgresService, RedisService, Runtime
from engine.runtime.docker import DockerRuntime
from engine.runtime.local import LocalRuntime

runtimes: Registry[type[Runtime]] = Registry("runtime")
runtimes.register(LocalRuntime)
runtimes.register(DockerRuntime)

__all__ = ["DockerRuntime", "LocalRuntime", "PostgresService", "RedisService", "Runtime", "runtimes"]

"""Runtimes, by the name used in ``stack.runtime``."""

from engine.registry import Registry
from engine.runtime.base import PostgresService, RedisService, Runtime
from engine.runtime.local import LocalRuntime

runtimes: Registry[type[Runtime]] = Registry("runtime")
runtimes.register(LocalRuntime)

__all__ = ["LocalRuntime", "PostgresService", "RedisService", "Runtime", "runtimes"]

"""Foreign backup formats, by the name a scenario writes as ``format:``."""

from engine.foreign.base import ForeignFacts, ForeignFormat, ForeignParams
from engine.foreign.pg_dump import PgDump
from engine.registry import Registry

foreign_formats: Registry[type[ForeignFormat]] = Registry("foreign backup format")
foreign_formats.register(PgDump)

__all__ = ["ForeignFacts", "ForeignFormat", "ForeignParams", "foreign_formats"]

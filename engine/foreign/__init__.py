"""Foreign backup formats, by the name a scenario writes as ``format:``."""

from engine.foreign.base import ForeignFacts, ForeignFormat, ForeignParams
from engine.foreign.directory import DirectoryTree
from engine.foreign.faiss_index import FaissIndex
from engine.foreign.pg_basebackup import PgBaseBackup
from engine.foreign.pg_dump import PgDump
from engine.foreign.pgbackrest import PgBackRest
from engine.foreign.rdb import RedisRdb
from engine.foreign.tar_archive import TarArchive
from engine.registry import Registry

foreign_formats: Registry[type[ForeignFormat]] = Registry("foreign backup format")
foreign_formats.register(PgDump)
foreign_formats.register(PgBaseBackup)
foreign_formats.register(PgBackRest)
foreign_formats.register(RedisRdb)
foreign_formats.register(TarArchive)
foreign_formats.register(DirectoryTree)
foreign_formats.register(FaissIndex)

__all__ = ["ForeignFacts", "ForeignFormat", "ForeignParams", "foreign_formats"]

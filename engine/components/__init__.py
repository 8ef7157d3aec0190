"""Component kinds, by the name used in ``kind:``."""

from engine.components.application import ApplicationComponent
from engine.components.base import ArtifactSource, Component, Health, SeedParams
from engine.components.configuration import ConfigurationComponent
from engine.components.postgres import PostgresComponent
from engine.components.postgres_pgbackrest import PostgresPgBackRestComponent
from engine.components.postgres_physical import PostgresPhysicalComponent
from engine.components.postgres_replicated import PostgresReplicatedComponent
from engine.components.redis import RedisComponent
from engine.components.redis_cluster import RedisClusterComponent
from engine.components.redis_rdb import RedisRdbComponent
from engine.components.redis_sentinel import RedisSentinelComponent
from engine.components.vectorstore import VectorstoreComponent
from engine.components.volumes import VolumesComponent
from engine.registry import Registry

component_kinds: Registry[type[Component]] = Registry("component kind")
component_kinds.register(PostgresComponent)
component_kinds.register(PostgresPhysicalComponent)
component_kinds.register(PostgresPgBackRestComponent)
component_kinds.register(PostgresReplicatedComponent)
component_kinds.register(RedisComponent)
component_kinds.register(RedisRdbComponent)
component_kinds.register(RedisSentinelComponent)
component_kinds.register(RedisClusterComponent)
component_kinds.register(VectorstoreComponent)
component_kinds.register(VolumesComponent)
component_kinds.register(ConfigurationComponent)
component_kinds.register(ApplicationComponent)

__all__ = ["ArtifactSource", "Component", "Health", "SeedParams", "component_kinds"]

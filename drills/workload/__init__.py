"""A live write workload during a drill, and the recovery point it lets drproof measure.

Without writes in flight, a drill can only say that a backup restores; it cannot say
how much data a disaster loses. The workload writes numbered records into each
component at a steady rate and remembers, outside the stack, every write the component
acknowledged. After the restore, the records that came back tell exactly which
acknowledged writes were lost: that is the measured recovery point.
"""

from drills.workload.application import ApplicationWriter
from drills.workload.base import WORKLOAD_MARK, Ack, Writer, writer_for, writer_kinds
from drills.workload.files import VolumeWriter
from drills.workload.postgres import PostgresWriter, ReplicatedPostgresWriter
from drills.workload.redis import RedisWriter
from drills.workload.redis_topologies import ClusterWriter, SentinelWriter
from drills.workload.vectors import VectorWriter

writer_kinds.register(PostgresWriter)
writer_kinds.register(ReplicatedPostgresWriter)
writer_kinds.register(RedisWriter)
writer_kinds.register(VolumeWriter)
writer_kinds.register(VectorWriter)
writer_kinds.register(SentinelWriter)
writer_kinds.register(ClusterWriter)
writer_kinds.register(ApplicationWriter)

__all__ = ["WORKLOAD_MARK", "Ack", "Writer", "writer_for", "writer_kinds"]

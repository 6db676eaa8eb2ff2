"""Real-server test support: throwaway servers and the pytest plugin `docstore.testing.plugin`."""

from docstore.testing.pgbouncer import LocalPgBouncer
from docstore.testing.redis_cluster import LocalRedisCluster
from docstore.testing.replica import LocalStandby
from docstore.testing.servers import LocalPostgres, LocalRedis, free_port

__all__ = [
    "LocalPgBouncer",
    "LocalPostgres",
    "LocalRedis",
    "LocalRedisCluster",
    "LocalStandby",
    "free_port",
]

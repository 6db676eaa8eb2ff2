"""Real-server test support: throwaway servers and the pytest plugin `docstore.testing.plugin`."""

from docstore.testing.servers import LocalPostgres, LocalRedis, free_port

__all__ = ["LocalPostgres", "LocalRedis", "free_port"]

"""What is fast and temporary, kept in Redis: the cache, the rate limiter, the task queue
and document progress.

Built on the Redis core (`docstore.redis`) and the shared modules; never imports PostgreSQL code,
the intake flow or the store.
"""

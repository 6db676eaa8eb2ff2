"""The PostgreSQL core: the pool, the one executor of named queries, the query loader,
error mapping and the schema.

It may import the shared modules at the top of the package (settings, errors, rules, models,
resources) and nothing else of docstore: the repositories are built on it, never the reverse.
"""

"""Document intake: blob stores (S3, local), text extractors and the submit/process flow.

May import the repositories, the Redis side (`docstore.ephemeral`), both cores and the shared
modules; never the migration or the store.
"""

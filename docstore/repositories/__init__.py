"""The repositories: users, documents, the document lifecycle, keyset pagination and API keys.

Built on the PostgreSQL core (`docstore.postgres`) and the shared modules; never imports Redis
code, the intake flow or the store.
"""

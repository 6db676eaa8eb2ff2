"""The Redis core: the client and its address, Lua scripts, hash-tagged key names, typed
errors from one list of outage exceptions, and the fail-open helper.

It may import the shared modules at the top of the package (settings, errors, rules) and nothing
else of docstore: the cache, limiter, queue and progress (`docstore.ephemeral`) and the migration
are built on it.
"""

pytest_plugins = ["docstore.testing.plugin"]

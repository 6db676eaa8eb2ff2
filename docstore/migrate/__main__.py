"""`python -m docstore.migrate ...`: see `docstore.migrate.cli`."""

from docstore.migrate.cli import main

raise SystemExit(main())

"""`python -m docstore ...`: see `docstore.cli`."""

from docstore.cli import main

raise SystemExit(main())

"""``python -m backup_catalog.cli``: the same as the ``backup-catalog`` console script."""
from backup_catalog.cli.main import main

raise SystemExit(main())

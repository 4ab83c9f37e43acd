"""Pure recovery core: LSNs, WAL names, timelines, backups, windows and plans. No I/O here."""

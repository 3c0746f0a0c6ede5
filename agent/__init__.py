"""Binkeeper agent: all I/O (config, node loop, transport, MariaDB, HTTP, CLI)."""

"""Talking to MariaDB servers as their client: the replication (dump) protocol's client side
and the server's command-line tools. Later: the SQL that promotes, fences and re-points the
servers of a group (failover)."""

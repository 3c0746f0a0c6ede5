"""The replication port: MariaDB's replication protocol served from committed history —
packets and the session state machine (sans-I/O), the queries replicas ask, the binlog
stream a dump sends, and the trio server."""

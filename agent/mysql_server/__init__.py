"""The MariaDB replication protocol, server side: replicas and restores pull committed
binlog from an agent. `packets` and `session` are sans-I/O; `server` is the trio loop."""

"""The group's servers: which is the primary, failover, fencing and rejoin
(docs/failover.md). `group` is the sans-I/O part: server states and the choices made."""

"""Restores: a client of an agent's replication port that reads committed history up to a
GTID or a time (`fetch`), writing it as standard binlog files or planning a restore into a
server, which then applies it by its own replication from the agent (`apply`). Later:
restores from S3."""

"""Restores: a client of an agent's replication port that writes committed history as
standard binlog files (`fetch`) and replays them into a server (`replay`). Later: branch
and point-in-time restore of timelines, and restores from S3."""

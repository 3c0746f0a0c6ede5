"""The leader's MariaDB source: tail the primary as a semi-sync replica (`tailer`), append
each transaction through the quorum and ACK it once committed (`source`, `ack_sender`),
with per-stage latencies (`latency`)."""

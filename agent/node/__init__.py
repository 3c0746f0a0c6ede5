"""One timeline's node: the trio loop that drives the consensus core over the WAL
(`loop`), the WAL as the core's log (`log_storage`), messages to and from protobuf
(`translate`), the peer transport (`transport`), and the narrow interface the admin API
and failover use (`handle`). The wire format itself is agent/wire/."""

"""What the processor serves to viewers: map snapshots (PUB) and frames on demand (REQ/REP), msgpack types and sockets."""

"""bluesky at the edge: documents over the 0MQ proxy (msgpack, never pickle), plan runners (RunEngine,
queue server), rescan requests and their checks, the queue-server profile."""

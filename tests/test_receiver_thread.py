"""The receiver thread's hand-over of a frame into shared memory keeps everything else of the message."""

import dataclasses

from monitor.session.receiver_thread import in_arena
from stream.encoded_frame import EncodedFrame
from stream.shared_arena import ArenaSlice
from stream.stream_messages import ImageMessage


def test_in_arena_carries_every_field_over():
    frame = EncodedFrame(3, 17, "bslz4", "uint32", (4, 5), b"abc", receive_time=12.5, error="")
    msg = ImageMessage("stream1", frame, start_time_ns=1, stop_time_ns=2, real_time_ns=3, appendix=b"app",
                       unique_id="u-1", reordered=True)
    piece = ArenaSlice("psm_x", 100, 3, 7)
    moved = in_arena(msg, piece)
    assert moved.frame == dataclasses.replace(frame, blob=b"", source=piece)
    assert moved == dataclasses.replace(msg, frame=moved.frame)
    # a field added to either dataclass must be carried over by in_arena too
    assert [f.name for f in dataclasses.fields(EncodedFrame)] == ["series", "frame", "encoding", "dtype", "shape",
                                                                  "blob", "receive_time", "error", "source"]
    assert [f.name for f in dataclasses.fields(ImageMessage)] == ["protocol", "frame", "start_time_ns",
                                                                  "stop_time_ns", "real_time_ns", "appendix",
                                                                  "unique_id", "reordered"]

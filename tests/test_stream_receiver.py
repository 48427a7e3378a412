"""The receiver over real loopback ZeroMQ sockets: real EIGER captures and bad input."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zmq

from stream.chunk_codec import ChunkDecoder, encode_frame
from stream.encoded_frame import EncodedFrame
from stream.stream1_codec import encode_stream1_end, encode_stream1_image
from stream.stream_messages import BadMessage, ImageMessage, SeriesEnd, SeriesStart
from stream.stream_receiver import StreamReceiver

from conftest import real_capture


@pytest.fixture
def link():
    """A bound PUSH socket (the 'detector') and a connected StreamReceiver."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    receivers = []

    def connect(**kwargs):
        r = StreamReceiver(f"tcp://127.0.0.1:{port}", context=ctx, **kwargs)
        receivers.append(r)
        return r

    yield push, connect
    for r in receivers:
        r.close()
    push.close(0)
    ctx.term()


def send_all(push, messages):
    for parts in messages:
        if len(parts) == 1:
            push.send(parts[0])
        else:
            push.send_multipart(parts)


def drain(receiver, n_wire, timeout_s=20.0):
    """Receive until ``n_wire`` wire messages arrived (or time out); all validated messages."""
    out = []
    deadline = time.monotonic() + timeout_s
    while receiver.counters.messages < n_wire and time.monotonic() < deadline:
        out.extend(receiver.receive(100))
    return out


def decode(frame):
    return ChunkDecoder().decode_into(frame, np.empty(frame.nbytes_decoded, np.uint8))


def test_real_eiger1m_stream1_over_socket(link):
    push, connect = link
    receiver = connect()
    messages = real_capture("eiger1m_stream1_all")
    send_all(push, messages)
    got = drain(receiver, len(messages))
    assert isinstance(got[0], SeriesStart) and got[0].header_detail == "all"
    assert got[0].shape == (1065, 1030) and got[0].pixel_mask.shape == (1065, 1030)
    images = [m for m in got if isinstance(m, ImageMessage)]
    assert [m.frame.frame for m in images] == list(range(9))
    first = decode(images[0].frame)
    assert (first == 0xFFFFFFFF).sum() == 38310 and first[first != 0xFFFFFFFF].sum() == 9
    # the detector was stopped: no end message; finishing closes the series explicitly
    assert not any(isinstance(m, SeriesEnd) for m in got)
    (end,) = receiver.finish()
    assert end.implicit and end.series == 14
    assert receiver.counters.corrupt == 0 and receiver.counters.images == 9


def test_real_eiger1m_stream2_over_socket_with_9mb_start(link):
    push, connect = link
    receiver = connect()
    messages = real_capture("eiger1m_stream2")
    assert len(messages[0][0]) > 9_000_000
    send_all(push, messages)
    got = drain(receiver, len(messages))
    assert isinstance(got[0], SeriesStart) and got[0].protocol == "stream2" and got[0].pixel_mask is not None
    images = [m for m in got if isinstance(m, ImageMessage)]
    assert len(images) == 10
    first = decode(images[0].frame)
    assert (first == 0xFFFFFFFF).sum() == 38130 and first[first != 0xFFFFFFFF].sum() == 51117
    assert isinstance(got[-1], SeriesEnd) and not got[-1].implicit


def test_real_eiger2_16m_stream2_over_socket(link):
    push, connect = link
    receiver = connect(protocol="stream2")
    messages = real_capture("eiger2_16m_stream2")
    send_all(push, messages)
    got = drain(receiver, len(messages))
    start, image, end = got
    assert start.problems and start.pixel_mask is None  # placeholder mask in this capture
    frame = decode(image.frame)
    assert frame.shape == (4362, 4148) and frame.dtype == np.uint16
    assert (frame == 0xFFFF).sum() == 1253075 and frame[frame != 0xFFFF].sum() == 13712
    assert isinstance(end, SeriesEnd)


def test_truncated_eiger2_9m_capture_counts_corrupt_and_keeps_going(link):
    push, connect = link
    receiver = connect()
    messages = real_capture("eiger2_9m_stream1_truncated")
    send_all(push, messages)
    got = drain(receiver, len(messages))
    assert isinstance(got[0], SeriesStart) and got[0].problems  # mask cut to 20 000 bytes
    bad = [m for m in got if isinstance(m, BadMessage)]
    assert len(bad) == 3 and all(m.kind == "corrupt" for m in bad)
    assert isinstance(got[-1], SeriesEnd)
    assert receiver.counters.corrupt == 3 and receiver.counters.images == 0


def good_series(series=5, shape=(16, 12), n=3, rng=None):
    rng = rng or np.random.default_rng(0)
    head = [json.dumps({"htype": "dheader-1.0", "series": series, "header_detail": "basic"}).encode(),
            json.dumps({"x_pixels_in_detector": shape[1], "y_pixels_in_detector": shape[0],
                        "bit_depth_image": 32, "nimages": n}).encode()]
    images = []
    for k in range(n):
        a = rng.poisson(2, shape).astype(np.uint32)
        images.append(encode_stream1_image(EncodedFrame(series, k, "bslz4", "uint32", shape, encode_frame(a))))
    return head, images


def test_bad_input_is_counted_and_the_next_good_frame_passes(link):
    push, connect = link
    receiver = connect()
    head, images = good_series(n=6)
    lying = list(images[2])
    d = json.loads(bytes(lying[1]))
    d["size"] += 5
    lying[1] = json.dumps(d).encode()
    short = list(images[2])
    short[2] = bytes(short[2])[: len(short[2]) // 2]
    d = json.loads(bytes(short[1]))
    d["size"] = len(short[2])
    short[1] = json.dumps(d).encode()
    wrong_shape = encode_stream1_image(EncodedFrame(5, 3, "bslz4", "uint32", (12, 16),
                                                    encode_frame(np.zeros((12, 16), np.uint32))))
    stream = [
        images[0],                                              # image before any header
        [b"\x00\xff garbage \x13"],                            # garbage bytes
        head,
        images[0],
        [b'{"htype": "dimage-1.0", "series": 5, "frame": '],   # JSON that does not parse
        [json.dumps({"htype": "dfuture-9.0"}).encode()],        # unknown htype
        images[1],
        lying,                                                  # a size that lies
        short,                                                  # a blob shorter than its header says
        wrong_shape,                                            # shape that does not match the series
        images[1],                                              # repeated
        images[4],
        images[3],                                              # out of order: passed on, marked
        images[5],
        encode_stream1_end(5),
    ]
    send_all(push, stream)
    got = drain(receiver, len(stream))
    good = [m.frame.frame for m in got if isinstance(m, ImageMessage)]
    assert good == [0, 1, 4, 3, 5]
    assert [m.frame.frame for m in got if isinstance(m, ImageMessage) and m.reordered] == [3]
    assert receiver.counters.reordered == 1
    bad = [m.reason for m in got if isinstance(m, BadMessage)]
    assert len(bad) == 8 and receiver.counters.corrupt == 8
    joined = " | ".join(bad)
    for words in ("before any series header", "repeated", "shape (12, 16)"):
        assert words in joined, words
    assert isinstance(got[-1], SeriesEnd)


def test_new_series_mid_stream_and_detector_restart(link):
    push, connect = link
    receiver = connect()
    head5, images5 = good_series(5)
    head6, images6 = good_series(6, shape=(8, 8))
    send_all(push, [head5, images5[0], head6, images6[0], head5, images5[0], encode_stream1_end(5)])
    got = drain(receiver, 7)
    assert [type(m).__name__ for m in got] == [
        "SeriesStart", "ImageMessage", "SeriesEnd", "SeriesStart", "ImageMessage", "SeriesEnd", "SeriesStart",
        "ImageMessage", "SeriesEnd"]
    assert got[2].implicit and got[5].implicit and not got[8].implicit
    assert receiver.counters.implicit_ends == 2


def test_a_burst_gives_the_same_messages_in_order(link):
    """receive(max_messages=N) takes what is already waiting: the same validated messages, in
    order, as one wire message at a time, and never more wire messages than asked."""
    push, connect = link
    receiver = connect()
    head, images = good_series(n=6)
    stream = [head, *images, encode_stream1_end(5)]
    send_all(push, stream)
    deadline = time.monotonic() + 20
    while receiver._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the rest arrives on loopback meanwhile
    got = receiver.receive(100, max_messages=3)
    assert receiver.counters.messages == 3
    while receiver.counters.messages < len(stream) and time.monotonic() < deadline:
        got += receiver.receive(100, max_messages=32)
    assert [type(m).__name__ for m in got] == ["SeriesStart"] + ["ImageMessage"] * 6 + ["SeriesEnd"]
    assert [m.frame.frame for m in got[1:-1]] == list(range(6))
    assert receiver.receive(10, max_messages=32) == []


def test_sub_socket_also_works():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    receiver = StreamReceiver(f"tcp://127.0.0.1:{port}", socket_type="sub", context=ctx)
    head, images = good_series()
    got = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:  # PUB drops until the subscription is through
        pub.send_multipart(head)
        got = [m for m in receiver.receive(100) if isinstance(m, SeriesStart)]
    assert got
    receiver.close()
    pub.close(0)
    ctx.term()

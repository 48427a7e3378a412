"""`nanomaps replay` and `nanomaps record` as users run them, over loopback sockets."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from stream.chunk_codec import encode_frame
from stream.dectris_writer import DectrisWriter
from stream.detector_metadata import DetectorMetadata
from stream.stream_messages import ImageMessage, SeriesEnd, SeriesStart
from stream.stream_receiver import StreamReceiver
from stream.stream_sender import BindAddressError, check_bind_address

NANOMAPS = str(Path(sys.executable).with_name("nanomaps"))


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:9999", "tcp://localhost:1", "tcp://[::1]:5", "ipc:///tmp/x",
                                      "tcp://127.0.0.1:*"])
def test_loopback_binds_are_allowed(endpoint):
    check_bind_address(endpoint)


def test_other_interfaces_need_permission():
    with pytest.raises(BindAddressError, match="--allow-remote"):
        check_bind_address("tcp://0.0.0.0:9999")
    with pytest.raises(BindAddressError, match="--allow-remote"):
        check_bind_address("tcp://*:9999")
    check_bind_address("tcp://0.0.0.0:9999", allow_remote=True)
    with pytest.raises(BindAddressError, match="expected tcp://HOST:PORT"):
        check_bind_address("127.0.0.1:9999")


@pytest.fixture
def small_file(tmp_path, rng):
    def make(encoding="bslz4", dtype="uint16", n=12):
        mask = np.zeros((20, 30), np.uint32)
        mask[:, 7] = 1
        md = DetectorMetadata("tiny EIGER", 30, 20, dtype, wavelength_A=0.95, detector_distance_m=0.1,
                              frame_time_s=0.002, count_time_s=0.001, nimages=n, pixel_mask=mask)
        frames = [rng.poisson(3, (20, 30)).astype(dtype) for _ in range(n)]
        path = tmp_path / f"src_{encoding}_master.h5"
        with DectrisWriter(path, md, encoding=encoding, frames_per_file=5) as w:
            for f in frames:
                w.write_chunk(encode_frame(f, encoding))
        return path, frames, mask
    return make


def start_replay(path, protocol, rate="max", extra=()):
    proc = subprocess.Popen([NANOMAPS, "replay", str(path), "--bind", "tcp://127.0.0.1:0".replace(":0", ":*"),
                             "--protocol", protocol, "--rate", rate, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    endpoint = re.search(r"on (tcp://[\d.]+:\d+)", line).group(1)
    return proc, endpoint


def received_from(proc, endpoint, timeout_s=30):
    """Every message a sending process (replay, simulate) sends to ``endpoint`` up to its series' end,
    and its ``(stdout, stderr)``; the process must exit 0."""
    got = []
    with StreamReceiver(endpoint) as receiver:
        deadline = time.monotonic() + timeout_s
        while not (got and isinstance(got[-1], SeriesEnd)) and time.monotonic() < deadline:
            got.extend(receiver.receive(100))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return got, out, err


@pytest.mark.parametrize("protocol, encoding", [("stream1", "lz4"), ("stream2", "bslz4"), ("stream1", "raw")])
def test_replay_sends_headers_mask_and_every_frame(small_file, protocol, encoding):
    path, frames, mask = small_file(encoding)
    got, out, _ = received_from(*start_replay(path, protocol))
    assert isinstance(got[0], SeriesStart) and got[0].shape == (20, 30)
    np.testing.assert_array_equal(got[0].pixel_mask, mask)
    assert abs(float(got[0].config["wavelength"]) - 0.95) < 1e-6
    images = [m for m in got if isinstance(m, ImageMessage)]
    assert [m.frame.frame for m in images] == list(range(len(frames)))
    from stream.chunk_codec import ChunkDecoder
    dec = ChunkDecoder()
    for m in images:
        np.testing.assert_array_equal(dec.decode_into(m.frame, np.empty(600, np.uint32)), frames[m.frame.frame])
    assert re.search(r"sent 12 frames .* frames/s", out)


def test_replay_keeps_a_fixed_rate(small_file):
    path, frames, _ = small_file(n=20)
    proc, endpoint = start_replay(path, "stream1", rate="40")
    with StreamReceiver(endpoint) as receiver:
        deadline = time.monotonic() + 30
        done = False
        while not done and time.monotonic() < deadline:
            done = any(isinstance(m, SeriesEnd) for m in receiver.receive(100))
    out, _ = proc.communicate(timeout=30)
    rate = float(re.search(r"([\d.]+) frames/s", out).group(1))
    assert 30 < rate <= 40.0, out  # n frames span n periods: never faster than asked


@pytest.mark.parametrize("encoding", ["bslz4", "lz4"])
def test_record_then_replay_then_record_again_is_lossless(small_file, tmp_path, encoding):
    """record → a DECTRIS recording; replaying it and recording again gives the same chunks.

    With lz4 the stream v1 leg carries raw `lz4<` blocks, which the recorder re-frames.
    """
    path, frames, mask = small_file(encoding, "uint32")
    first = tmp_path / "a_master.h5"
    second = tmp_path / "b_master.h5"
    for source, target, protocol in ((path, first, "stream2"), (first, second, "stream1")):
        proc, endpoint = start_replay(source, protocol)
        rec = subprocess.run([NANOMAPS, "record", "--connect", endpoint, "--out", str(target)],
                             capture_output=True, text=True, timeout=60)
        proc.communicate(timeout=30)
        assert rec.returncode == 0, rec.stderr
        assert "12 frames recorded" in rec.stdout
    with h5py.File(path, "r") as a, h5py.File(second, "r") as b:
        for k in range(12):
            i, j = divmod(k, 5)
            src = a[f"entry/data/data_{i + 1:06d}"].id.read_direct_chunk((j, 0, 0))[1]
            dst = b["entry/data/data_000001"].id.read_direct_chunk((k, 0, 0))[1]
            if encoding == "lz4":
                # `lz4<` carries the bare LZ4 block: the framing header is rebuilt, the block is not touched
                assert src[12:] == dst[12:], k
                np.testing.assert_array_equal(a[f"entry/data/data_{i + 1:06d}"][j], b["entry/data/data_000001"][k])
            else:
                assert src == dst, k  # chunks travel untouched: no recompression anywhere
        np.testing.assert_array_equal(b["entry/instrument/detector/detectorSpecific/pixel_mask"][()], mask)
        assert b["entry/stream"].attrs["ended"] == "end message"
        assert b["entry/stream/frames"]["frame"].tolist() == list(range(12))


def test_replay_paces():
    from stream.dectris_replay import frame_times, parse_rate

    assert parse_rate("max") == "max" and parse_rate("250") == 250.0
    with pytest.raises(ValueError):
        parse_rate("fast")
    np.testing.assert_allclose(frame_times(4, 10.0, 0.5, None), [0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(frame_times(3, "original", 0.5, None), [0, 0.5, 1.0])  # file writer: frame_time
    table = np.zeros(3, dtype=[("frame", "<i8"), ("receive_time", "<f8")])
    table["frame"] = [0, 1, 2]
    table["receive_time"] = [100.0, 100.25, 101.0]
    np.testing.assert_allclose(frame_times(3, "original", 0.5, table), [0, 0.25, 1.0])  # recorded pace
    assert not frame_times(3, "max", 0.5, table).any()


def test_simulate_streams_live_as_a_detector():
    proc = subprocess.Popen([NANOMAPS, "simulate", "--bind", "tcp://127.0.0.1:*", "--shape", "2", "3",
                             "--protocol", "stream2", "--rate", "50"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    got, out, _ = received_from(proc, re.search(r"on (tcp://[\d.]+:\d+)", line).group(1), timeout_s=60)
    assert isinstance(got[0], SeriesStart) and got[0].protocol == "stream2" and got[0].shape == (1065, 1030)
    assert [m.frame.frame for m in got if isinstance(m, ImageMessage)] == list(range(6))
    assert "sent 6 frames" in out


def received_images(path, extra=()):
    """The frames ``replay`` sends of ``path`` (stream v1, as fast as taken), and what it printed."""
    got, out, err = received_from(*start_replay(path, "stream1", extra=extra))
    return [m.frame for m in got if isinstance(m, ImageMessage)], out + err


@pytest.mark.parametrize("encoding", ["bslz4", "raw"])
def test_replay_from_mapped_files_sends_what_reading_sends(tmp_path, rng, encoding):
    """Chunks sent from the mapped data files (the default) are the chunks `--no-map` reads, and a
    frame that cannot be mapped (never written; in a data file cut short) is reported the same."""
    mask = np.zeros((20, 30), np.uint32)
    md = DetectorMetadata("tiny EIGER", 30, 20, "uint32", frame_time_s=0.002, count_time_s=0.001, nimages=12,
                          pixel_mask=mask)
    path = tmp_path / "holes_master.h5"
    with DectrisWriter(path, md, encoding=encoding, frames_per_file=5) as w:
        for k in range(12):
            if k != 3:  # a frame the recorder never received
                w.write_chunk(encode_frame(rng.poisson(3, (20, 30)).astype(np.uint32), encoding), frame=k)
    last = tmp_path / "holes_data_000003.h5"
    with open(last, "r+b") as fh:
        fh.truncate(last.stat().st_size - 50)
    mapped, mapped_said = received_images(path)
    read, read_said = received_images(path, ("--no-map",))
    assert [f.frame for f in mapped] == [f.frame for f in read] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    for a, b in zip(mapped, read):
        assert (a.encoding, a.dtype, a.shape) == (b.encoding, b.dtype, b.shape)
        assert bytes(a.blob) == bytes(b.blob), a.frame
    for said in (mapped_said, read_said):
        assert "sent 9 frames (6 unreadable skipped)" in said and "holes_data_000003.h5" in said, said
        assert re.search(r"frame 3 not sent: .*read failed", said), said


def test_stream1_image_shares_a_view_only_when_asked(rng):
    from stream.encoded_frame import EncodedFrame
    from stream.stream1_codec import encode_stream1_image
    blob = encode_frame(rng.poisson(3, (20, 30)).astype(np.uint32), "bslz4")
    view = memoryview(bytearray(blob))
    frame = EncodedFrame(1, 0, "bslz4", "uint32", (20, 30), view)
    shared = encode_stream1_image(frame, share_blob=True)[2]
    copied = encode_stream1_image(frame)[2]
    assert shared is view and isinstance(copied, bytes) and copied == blob
    view[0] ^= 0xFF  # the copy is the frame's bytes as they were; the shared part is the buffer itself
    assert copied == blob and bytes(shared) != blob


@pytest.mark.parametrize("no_map", [False, True])
def test_replay_repeat_continues_the_series_with_the_same_chunks(small_file, no_map):
    """``--repeat 3`` sends the file three times as one series: frame numbers go on, each pass's
    chunks are the file's (mapped frames are listed once and reused; read frames read anew)."""
    path, frames, _ = small_file("bslz4", n=7)
    got, out, _ = received_from(*start_replay(path, "stream1", extra=("--repeat", "3") + (("--no-map",) if no_map else ())))
    images = [m.frame for m in got if isinstance(m, ImageMessage)]
    assert [f.frame for f in images] == list(range(21))
    assert isinstance(got[-1], SeriesEnd)
    for f in images[7:]:
        assert bytes(f.blob) == bytes(images[f.frame % 7].blob), f.frame
    from stream.chunk_codec import ChunkDecoder
    np.testing.assert_array_equal(ChunkDecoder().decode_into(images[20], np.empty(600, np.uint32)), frames[6])
    assert re.search(r"sent 21 frames", out)

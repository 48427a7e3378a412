"""Chunks mapped from their data files (reprocess workers) are the chunks ChunkReader reads, and
a chunk that cannot be mapped is left to ChunkReader, which reports it as before."""

from __future__ import annotations

import numpy as np
import pytest

from stream.chunk_codec import encode_frame
from stream.dectris_file import ChunkReader, DectrisFile
from stream.dectris_writer import DectrisWriter
from stream.detector_metadata import DetectorMetadata
from stream.mapped_chunks import MappedChunkReader


def write_series(path, frames, *, encoding, skip=(), frames_per_file=3):
    rows, cols = frames[0].shape
    md = DetectorMetadata("test EIGER", x_pixels=cols, y_pixels=rows, dtype=frames[0].dtype.name,
                          nimages=len(frames))
    with DectrisWriter(path, md, encoding=encoding, frames_per_file=frames_per_file) as w:
        for k, f in enumerate(frames):
            if k not in skip:  # a frame the recorder never received: its chunk stays unallocated
                w.write_chunk(encode_frame(f, encoding), frame=k)


def lazy_series(tmp_path, rng, n, **kwargs):
    """Write ``n`` Poisson frames (40 × 30 uint32, 3 per data file) and return them as lazy frames."""
    master = tmp_path / "s_master.h5"
    write_series(master, [rng.poisson(3.0, (40, 30)).astype(np.uint32) for _ in range(n)], **kwargs)
    with DectrisFile(master) as f:
        return list(f.iter_frames(lazy=True))


@pytest.mark.parametrize("encoding", ["bslz4", "lz4", "raw"])
def test_mapped_chunks_are_the_chunks_read(tmp_path, rng, encoding):
    frames = lazy_series(tmp_path, rng, 8, encoding=encoding, skip={4})
    mapped_reader, reader = MappedChunkReader(max_open=2), ChunkReader()  # 3 data files: one is evicted
    mapped = [mapped_reader.map(fr) for fr in frames]
    for k, (fr, m) in enumerate(zip(frames, mapped)):
        read = reader.read(fr)
        if k == 4:
            assert m is fr and read.error  # not allocated: not mapped, and reported by the reader
            continue
        assert isinstance(m.blob, memoryview) and not read.error
        assert bytes(m.blob) == bytes(read.blob) and m.encoding == read.encoding == encoding
        assert (m.series, m.frame, m.dtype, m.shape, m.source) == (fr.series, fr.frame, fr.dtype, fr.shape, fr.source)
    # a frame with its bytes, or with an error, is left as it is
    assert mapped_reader.map(mapped[0]) is mapped[0]
    del mapped, m
    mapped_reader.close()
    reader.close()


def test_a_file_cut_short_is_never_mapped_past_its_end(tmp_path, rng):
    frames = lazy_series(tmp_path, rng, 3, encoding="bslz4")
    reader = MappedChunkReader()
    assert isinstance(reader.map(frames[0]).blob, memoryview)
    # the chunk table says more than the mapping holds (the file was cut after it was mapped)
    mapped = reader._files[frames[2].source.path]
    table = mapped.tables[frames[2].source.dataset]
    table[2] = (len(mapped.map) - 10, 20, 0)
    assert reader.map(frames[2]) is frames[2]  # left to ChunkReader
    reader.close()
    # a file cut short before: HDF5 will not open it, so nothing is mapped, and the reader reports it
    data = tmp_path / "s_data_000001.h5"
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size - 100)
    reader = MappedChunkReader()
    for fr in frames:
        assert reader.map(fr) is fr and ChunkReader().read(fr).error
    reader.close()


def test_an_evicted_file_stays_mapped_while_its_views_are_used(tmp_path, rng):
    frames = lazy_series(tmp_path, rng, 6, encoding="bslz4")
    reader = MappedChunkReader(max_open=1)
    first = reader.map(frames[0])  # file 1
    want = bytes(first.blob)
    second = reader.map(frames[3])  # file 2: file 1 is evicted, but a view of it is alive
    assert bytes(first.blob) == want and bytes(second.blob)
    del first
    third = reader.map(frames[1])  # file 1 again, mapped anew; the old mapping is closed now
    assert bytes(third.blob) == bytes(ChunkReader().read(frames[1]).blob)
    # file 2 evicted in turn: its mapping waits for its view; file 1's first mapping is gone
    assert [m.path[-9:] for m in reader._closing] == ["000002.h5"] and len(reader._files) == 1
    del second, third
    reader.close()
    assert not reader._closing

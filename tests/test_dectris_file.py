"""DECTRIS file-writer layout: what we write opens in plain h5py, what DECTRIS writes we read."""

import os

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from stream.chunk_codec import ChunkDecoder, encode_frame
from stream.dectris_file import DectrisFile, DectrisFileError
from stream.dectris_writer import DectrisWriter
from stream.detector_metadata import DetectorMetadata

from conftest import REAL_DATA


def write_series(path, frames, *, encoding="bslz4", frames_per_file=3, mask=None):
    rows, cols = frames[0].shape
    md = DetectorMetadata("test EIGER", x_pixels=cols, y_pixels=rows, dtype=frames[0].dtype.name,
                          detector_distance_m=0.2, beam_center_x_px=10.5, beam_center_y_px=20.25,
                          wavelength_A=0.9537, nimages=len(frames), pixel_mask=mask)
    with DectrisWriter(path, md, encoding=encoding, frames_per_file=frames_per_file) as w:
        for f in frames:
            w.write_chunk(encode_frame(f, encoding))
    return md


@pytest.fixture
def frames(rng):
    return [rng.poisson(2.0, (40, 30)).astype(np.uint32) for _ in range(7)]


def test_layout_opens_in_plain_h5py(tmp_path, frames):
    mask = np.zeros((40, 30), np.uint32)
    mask[:, 15] = 1
    write_series(tmp_path / "s_master.h5", frames, mask=mask)
    assert sorted(os.listdir(tmp_path)) == ["s_data_000001.h5", "s_data_000002.h5", "s_data_000003.h5",
                                            "s_master.h5"]
    with h5py.File(tmp_path / "s_master.h5", "r") as f:
        link = f["entry/data"].get("data_000002", getlink=True)
        assert isinstance(link, h5py.ExternalLink)
        assert (link.filename, link.path) == ("s_data_000002.h5", "/entry/data/data")
        ds = f["entry/data/data_000002"]
        assert ds.shape == (3, 40, 30) and ds.chunks == (1, 40, 30)
        assert ds.attrs["image_nr_low"] == 4 and ds.attrs["image_nr_high"] == 6
        np.testing.assert_array_equal(ds[1], frames[4])
        det = f["entry/instrument/detector"]
        assert det["detectorSpecific/x_pixels_in_detector"][()] == 30
        assert det["detectorSpecific/y_pixels_in_detector"][()] == 40
        assert det["detectorSpecific/compression"][()] == b"bslz4"
        np.testing.assert_array_equal(det["detectorSpecific/pixel_mask"][()], mask)
        assert det["beam_center_x"].attrs["units"] == b"pixel"
        assert abs(f["entry/instrument/beam/incident_wavelength"][()] - 0.9537) < 1e-6


@pytest.mark.parametrize("encoding", ["bslz4", "lz4", "raw"])
def test_reader_yields_every_frame_still_compressed(tmp_path, frames, encoding):
    write_series(tmp_path / "s_master.h5", frames, encoding=encoding)
    decoder = ChunkDecoder()
    buf = np.empty(40 * 30, np.uint32)
    with DectrisFile(tmp_path / "s_master.h5") as f:
        assert f.metadata.shape == (40, 30) and f.metadata.dtype == "uint32" and f.metadata.nimages == 7
        assert f.frame_count == 7
        got = list(f.iter_frames(series=3))
        assert [g.frame for g in got] == list(range(7)) and {g.series for g in got} == {3}
        assert {g.encoding for g in got} == {encoding}
        for g in got:
            np.testing.assert_array_equal(decoder.decode_into(g, buf), frames[g.frame])
        assert [g.frame for g in f.iter_frames(start=2, stop=5)] == [2, 3, 4]


@pytest.mark.allow_error_log
def test_missing_data_file_gives_error_frames_not_an_exception(tmp_path, frames):
    write_series(tmp_path / "s_master.h5", frames)
    os.remove(tmp_path / "s_data_000002.h5")
    with DectrisFile(tmp_path / "s_master.h5") as f:
        got = list(f.iter_frames())
    assert [g.frame for g in got] == list(range(7))
    bad = [g.frame for g in got if g.error]
    assert bad == [3, 4, 5]
    assert "s_data_000002.h5" in got[3].error


def test_gzip_dataset_falls_back_to_plain_read(tmp_path, rng):
    data = rng.poisson(2.0, (2, 8, 9)).astype(np.uint16)
    with h5py.File(tmp_path / "g_data_000001.h5", "w") as f:
        f.create_dataset("entry/data/data", data=data, chunks=(1, 8, 9), compression="gzip")
    with h5py.File(tmp_path / "g_master.h5", "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("g_data_000001.h5", "/entry/data/data")
    with DectrisFile(tmp_path / "g_master.h5") as f:
        got = list(f.iter_frames())
    assert [g.encoding for g in got] == ["raw", "raw"]
    np.testing.assert_array_equal(np.frombuffer(got[1].blob, np.uint16).reshape(8, 9), data[1])


@pytest.mark.allow_error_log
def test_real_dectris_master_file_metadata():
    """A master file written by a real DECTRIS EIGER 9M (its data file is not included)."""
    with DectrisFile(REAL_DATA / "eiger9m_master.h5") as f:
        md = f.metadata
        assert md.shape == (3269, 3110) and md.dtype == "uint16"
        assert md.pixel_mask is not None and md.pixel_mask.shape == (3269, 3110)
        assert abs(md.wavelength_A - 0.98011) < 1e-4
        assert abs(md.detector_distance_m - 0.134255) < 1e-6
        assert md.compression == "bslz4" and md.nimages == 1
        frames = list(f.iter_frames())
    assert len(frames) == 1 and "dectris_eiger_data_000001.h5" in frames[0].error


def test_not_a_master_file(tmp_path):
    with pytest.raises(DectrisFileError, match="no such file"):
        DectrisFile(tmp_path / "nope_master.h5")
    (tmp_path / "text_master.h5").write_text("hello")
    with pytest.raises(DectrisFileError, match="not an HDF5 file"):
        DectrisFile(tmp_path / "text_master.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(DectrisFileError, match="no /entry/data"):
        DectrisFile(tmp_path / "other.h5")


def test_lazy_frames_are_read_by_the_chunk_reader(tmp_path, frames):
    """Offline workers read chunks themselves: same bytes as an eager read."""
    from stream.dectris_file import ChunkReader

    write_series(tmp_path / "s_master.h5", frames)
    with DectrisFile(tmp_path / "s_master.h5") as f:
        eager = list(f.iter_frames())
        lazy = list(f.iter_frames(lazy=True))
    assert all(fr.blob == b"" and fr.source is not None for fr in lazy)
    assert lazy[4].source.path == str((tmp_path / "s_data_000002.h5").resolve()) and lazy[4].source.index == 1
    reader = ChunkReader(max_open=2)
    for e, lz in zip(eager, lazy):
        got = reader.read(lz)
        assert got.blob == e.blob and got.encoding == e.encoding and not got.error
    # a worker's reader: one buffer, grown to the largest chunk, the blob a view of it
    reusing = ChunkReader(max_open=2, reuse_buffer=True)
    sizes = set()
    for e, lz in zip(eager, lazy):
        got = reusing.read(lz)
        assert isinstance(got.blob, memoryview) and bytes(got.blob) == e.blob and got.encoding == e.encoding
        sizes.add(reusing._buffer.size)
    assert len(sizes) <= 3 and max(sizes) >= max(len(e.blob) for e in eager)
    reusing.close()
    os.remove(tmp_path / "s_data_000003.h5")
    reader.close()
    assert "read failed" in ChunkReader().read(lazy[6]).error
    assert "read failed" in ChunkReader(reuse_buffer=True).read(lazy[6]).error

"""The arena's copy around the cache (non-temporal stores) writes exactly the bytes a plain copy
does, and nothing outside them, for every alignment of source and destination."""

from __future__ import annotations

import numpy as np
import pytest

from stream import streaming_copy as streaming_copy_module
from stream.streaming_copy import STREAMING_MIN_BYTES, streaming_copy, streaming_copy_kernel


@pytest.mark.skipif(not streaming_copy_module.NON_TEMPORAL, reason="the kernel's fence is x86-64's sfence")
def test_the_kernel_copies_exactly_for_every_alignment_and_length(rng):
    dst = np.empty(4096, np.uint8)
    src = rng.integers(0, 256, 2048, dtype=np.uint8)
    for n in list(range(0, 130)) + [255, 256, 257, 1000, 1999]:
        for to in range(0, 64, 3):
            for frm in (0, 1, 5, 32):
                dst[:] = 0xA5  # guard bytes: anything written outside [to, to + n) shows
                streaming_copy_kernel(dst, np.uint64(to), src[frm:frm + n])
                expected = np.full_like(dst, 0xA5)
                expected[to:to + n] = src[frm:frm + n]
                assert np.array_equal(dst, expected), (n, to, frm)


@pytest.mark.parametrize("non_temporal", [True, False])
@pytest.mark.parametrize("n", [10, STREAMING_MIN_BYTES - 1, STREAMING_MIN_BYTES, 1_490_003])
def test_the_wrapper_takes_bytes_and_views_small_and_large(rng, monkeypatch, n, non_temporal):
    # False: a CPU other than x86-64, where every copy is the plain one
    monkeypatch.setattr(streaming_copy_module, "NON_TEMPORAL", non_temporal and streaming_copy_module.NON_TEMPORAL)
    dst = np.zeros(2 * n + 64, np.uint8)
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    streaming_copy(dst, 17, data)
    streaming_copy(dst, n + 40, memoryview(data))
    assert dst[17:17 + n].tobytes() == data and dst[n + 40:2 * n + 40].tobytes() == data
    assert not dst[:17].any() and not dst[17 + n:n + 40].any() and not dst[2 * n + 40:].any()
    # any contiguous buffer is copied as its bytes, an array of wider items too
    if n % 4 == 0:
        words = np.frombuffer(data, np.uint32)
        dst[:] = 0
        streaming_copy(dst, 3, words)
        assert dst[3:3 + n].tobytes() == data and not dst[:3].any() and not dst[3 + n:].any()


def test_the_wrapper_refuses_what_does_not_fit():
    dst = np.zeros(100, np.uint8)
    with pytest.raises(ValueError, match="do not fit"):
        streaming_copy(dst, 90, b"x" * 11)
    with pytest.raises(ValueError, match="do not fit"):
        streaming_copy(dst, -1, b"x")
    with pytest.raises(ValueError, match="contiguous 1-D uint8"):
        streaming_copy(np.zeros(100, np.uint16), 0, b"x")
    with pytest.raises(ValueError, match="writable"):
        streaming_copy(np.frombuffer(bytes(100), np.uint8), 0, b"x")

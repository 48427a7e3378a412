"""Selective bslz4 decoding against the full decode + valid-pixel sum, per EIGER 4M frame (uint32 or uint16).

Frames and windows are ``run_bench.py``'s (``make_file``, EIGER 4M PONI, three peak windows);
the needed pixels are the ``FrameProcessor``'s LUT pixels and their 8 neighbours, the mask its
``mask``. Prints, in ms per frame, min / median over repeats of the mean over the frames
(cycled, so mostly out of cache), as CPU time of the calling thread (``time.thread_time``):

- full: ``ChunkDecoder.decode_into`` (vendor C, SIMD bitshuffle) + ``sum_valid_pixels``;
- selective: ``SelectiveDecoder.decode_into`` (one numba pass);
- both followed by the ROI pass counting hot-pixel spikes (``HotPixelTracker.accumulate``), which
  reads the needed pixels: out of cache after a full decode, just written after a selective one;
- stages of the selective pass, measured with drivers of the same kernels that stop early:
  LZ4 only, LZ4 + popcount sum, LZ4 + unshuffle of the needed groups; the sum and unshuffle
  costs are the differences.

The machine is shared and noisy (2 cores, other sessions): CPU time leaves out the waits for a
core but not the cache and memory traffic of the neighbours; look at the minima, and expect
10–20 % between runs. Informative only; ``python benchmarks/partial_decode_bench.py [--repeats N]``.
See docs/partial_decode.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from run_bench import DETECTORS, make_file  # noqa: E402

from processors.frame_processor import FrameProcessor  # noqa: E402
from processors.polar_roi_kernel import sum_valid_pixels  # noqa: E402
from processors.processing_setup import ProcessingSetup  # noqa: E402
from stream import bslz4_partial_kernel as k  # noqa: E402
from stream.bslz4_partial import SelectiveDecoder, with_neighbours  # noqa: E402
from stream.chunk_codec import ChunkDecoder, encode_frame  # noqa: E402
from stream.dectris_file import DectrisFile  # noqa: E402
from stream.encoded_frame import EncodedFrame  # noqa: E402

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U3 = np.uint64(3)
_U4 = np.uint64(4)


@numba.njit(cache=True, nogil=True)
def stages_pass(blob, n_elems, itemsize, block_elems, valid8, needed_groups, scratch8, rows, out, do_sum,
                do_unshuffle):
    """``selective_pass`` with the popcount sum and the unshuffle switchable (no checks but LZ4's)."""
    n_planes = itemsize << _U3
    n_blocks = n_elems // block_elems  # full blocks only: enough for timing
    pos = np.uint64(12)
    total = _U0
    gi = _U0
    gn = _U0  # next needed group when the unshuffle does not advance gi
    ng = np.uint64(needed_groups.size)
    for blk in range(n_blocks):
        clen = ((np.uint64(blob[pos]) << np.uint64(24)) | (np.uint64(blob[pos + _U1]) << np.uint64(16))
                | (np.uint64(blob[pos + np.uint64(2)]) << np.uint64(8)) | np.uint64(blob[pos + _U3]))
        pos += _U4
        plane_bytes = block_elems >> _U3
        first_group = blk * plane_bytes
        # as selective_pass: repeated planes of a block without needed groups are not written
        if do_unshuffle:
            needs_groups = gi < ng and needed_groups[gi] < first_group + plane_bytes
        else:
            needs_groups = gn < ng and needed_groups[gn] < first_group + plane_bytes
            while gn < ng and needed_groups[gn] < first_group + plane_bytes:
                gn += _U1
        repeats = plane_bytes if (plane_bytes & np.uint64(7)) == _U0 and plane_bytes >= np.uint64(32) else _U0
        got, template, end_plane = k.lz4_decompress_planes(blob, pos, pos + clen, scratch8, block_elems * itemsize,
                                                           repeats, needs_groups)
        total += np.uint64(got)
        pos += clen
        if do_sum:
            rep_lo = template + _U1 if end_plane != _U0 else _U0
            s, c = k.block_valid_sum(scratch8, plane_bytes, n_planes, valid8, first_group, rep_lo, end_plane)
            total += s
        if do_unshuffle:
            gi = k.unshuffle_needed(scratch8, plane_bytes, n_planes, first_group, needed_groups, gi, rows, out)
    return total


def timed(fn, frames, repeats: int) -> np.ndarray:
    """CPU ms per frame of this thread (``time.thread_time``): the mean over ``frames`` of each
    repeat. CPU time, not wall time: on a shared machine the time this thread waits for a core
    is left out (everything measured runs in this thread)."""
    res = []
    for _ in range(repeats):
        t = time.thread_time()
        for fr in frames:
            fn(fr)
        res.append((time.thread_time() - t) / len(frames) * 1e3)
    return np.array(res)


def stage_times(frames: list, proc: FrameProcessor, dtype_name: str, repeats: int) -> dict:
    """CPU ms per frame (arrays over ``repeats``) of the full and selective paths and of the
    selective pass's stages, on ``frames`` (bslz4, ``proc``'s detector); checks equality first."""
    shape = proc.shape
    n = shape[0] * shape[1]
    needed = with_neighbours(proc.lut.pixel_index, shape)
    dtype = np.dtype(dtype_name)
    itemsize = dtype.itemsize
    block_elems = 8192 // itemsize
    sel = SelectiveDecoder(shape, dtype_name, needed, proc.mask)
    sel_blocks = SelectiveDecoder(shape, dtype_name, needed, proc.mask, whole_blocks=True)
    full = ChunkDecoder()
    masked_index = proc.roi.masked_index
    buf = np.empty(n, dtype=dtype)
    out = np.empty(n, dtype=dtype)
    sentinel = int(np.iinfo(dtype).max)

    def full_pass(fr):
        img = full.decode_into(fr, buf)
        return sum_valid_pixels(img.reshape(-1), masked_index, sentinel)

    # equality first (and compilation): the valid sum, the needed pixels, and the ROI pass's bins
    for fr in frames:
        ref = full_pass(fr)
        got = sel.decode_into(fr, out)
        assert got == tuple(int(v) for v in ref), (got, ref)
        assert np.array_equal(out[needed], buf[needed])
        proc.roi.accumulate(buf.reshape(shape))
        sums, counts = proc.roi.sums.copy(), proc.roi.counts.copy()
        proc.roi.accumulate(out.reshape(shape))
        assert np.array_equal(sums, proc.roi.sums) and np.array_equal(counts, proc.roi.counts)
        assert sel_blocks.decode_into(fr, out) == got
    hot = proc.hot_pixels

    def full_roi(fr):
        full_pass(fr)
        hot.accumulate(buf.reshape(shape))

    def sel_roi(fr):
        sel.decode_into(fr, out)
        hot.accumulate(out.reshape(shape))
    sel._prepare(8192)  # the bench's blobs use 8192-byte blocks
    blobs = [np.frombuffer(fr.blob, dtype=np.uint8) for fr in frames]
    args_common = (np.uint64(n), np.uint64(itemsize), np.uint64(block_elems), sel._valid8)
    groups = sel.needed_groups
    scratch = sel._scratch

    def stage(do_sum, do_unshuffle):
        return lambda b: stages_pass(b, *args_common, groups, scratch, sel._rows, out.view(np.uint8), do_sum, do_unshuffle)

    for flags in ((False, False), (True, False), (False, True)):
        stage(*flags)(blobs[0])
    r = repeats
    t_decode = timed(lambda fr: full.decode_into(fr, buf), frames, r)
    images = [full.decode_into(fr, np.empty(n, dtype)).reshape(-1) for fr in frames]
    t_sum = timed(lambda img: sum_valid_pixels(img, masked_index, sentinel), images, r)
    t_full = timed(full_pass, frames, r)
    t_sel = timed(lambda fr: sel.decode_into(fr, out), frames, r)
    t_sel_blocks = timed(lambda fr: sel_blocks.decode_into(fr, out), frames, r)
    t_full_roi = timed(full_roi, frames, r)
    t_sel_roi = timed(sel_roi, frames, r)
    t_lz4 = timed(stage(False, False), blobs, r)
    t_lz4_sum = timed(stage(True, False), blobs, r)
    t_lz4_unsh = timed(stage(False, True), blobs, r)

    return dict(decode=t_decode, valid_sum=t_sum, full=t_full, selective=t_sel, selective_blocks=t_sel_blocks,
                full_roi=t_full_roi, selective_roi=t_sel_roi, lz4=t_lz4, lz4_sum=t_lz4_sum, lz4_unshuffle=t_lz4_unsh,
                needed=needed, groups=groups, block_elems=block_elems, sel=sel, full_pass=full_pass, out=out,
                sentinel=sentinel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--dtype", choices=("uint32", "uint16"), default="uint32")
    parser.add_argument("--poisson", action="store_true", help="also Poisson frames of 4 count levels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        config, master, _ = make_file(Path(d), f"4M_{args.dtype}", DETECTORS["EIGER 4M"], args.frames, args.dtype)
        with DectrisFile(master) as f:
            frames = list(f.iter_frames())
            md = f.metadata
        proc = FrameProcessor(ProcessingSetup.from_config(config, pixel_mask=md.pixel_mask, shape=md.shape))
    st = stage_times(frames, proc, args.dtype, args.repeats)
    (t_decode, t_sum, t_full, t_sel, t_sel_blocks, t_full_roi, t_sel_roi, t_lz4, t_lz4_sum, t_lz4_unsh) = (
        st[k] for k in ("decode", "valid_sum", "full", "selective", "selective_blocks", "full_roi", "selective_roi",
                        "lz4", "lz4_sum", "lz4_unshuffle"))
    needed, groups, block_elems, sel, full_pass, out, sentinel = (
        st[k] for k in ("needed", "groups", "block_elems", "sel", "full_pass", "out", "sentinel"))
    shape = proc.shape
    n = shape[0] * shape[1]
    dtype = np.dtype(args.dtype)
    itemsize = dtype.itemsize
    r = args.repeats
    n_blocks = -(-n // block_elems)
    blocks_needed = np.unique(groups // (block_elems // 8)).size
    mean_blob = np.mean([len(fr.blob) for fr in frames]) / 1e6
    print(f"EIGER 4M {args.dtype} {shape}, {len(frames)} frames of {mean_blob:.2f} MB compressed "
          f"({n * itemsize / 1e6:.1f} MB decoded); "
          f"{proc.lut.pixel_index.size} LUT pixels, {needed.size} needed with neighbours "
          f"({100 * needed.size / n:.1f} %), {groups.size} 8-pixel groups ({100 * groups.size * 8 / n:.1f} %), "
          f"in {blocks_needed} of {n_blocks} blocks ({100 * blocks_needed / n_blocks:.1f} %)")
    print(f"CPU ms per frame (thread time), min / median of {r} (noisy shared machine: trust the minima):")

    def show(name, a):
        print(f"  {name:<46s} {a.min():7.3f} / {np.median(a):7.3f}")

    show("full decode (ChunkDecoder)", t_decode)
    show("sum_valid_pixels on the decoded frame", t_sum)
    show("full decode + sum_valid_pixels", t_full)
    show("selective pass (SelectiveDecoder.decode_into)", t_sel)
    show("selective pass, whole needed blocks", t_sel_blocks)
    show("full decode + sum + ROI pass (counting spikes)", t_full_roi)
    show("selective pass + ROI pass (counting spikes)", t_sel_roi)
    show("  stage: LZ4 only", t_lz4)
    show("  stage: LZ4 + popcount sum", t_lz4_sum)
    show("  stage: LZ4 + unshuffle of needed groups", t_lz4_unsh)
    print(f"  => popcount sum ~{np.min(t_lz4_sum) - np.min(t_lz4):.3f} ms, "
          f"unshuffle ~{np.min(t_lz4_unsh) - np.min(t_lz4):.3f} ms (differences of minima); "
          f"speed-up full / selective {np.min(t_full) / np.min(t_sel):.2f}x, with the ROI pass "
          f"{np.min(t_full_roi) / np.min(t_sel_roi):.2f}x (minima)")
    if args.poisson:
        # robustness: other count levels, with and without the gaps at the sentinel
        rng = np.random.default_rng(2)
        print(f"Poisson frames ({args.dtype}, same mask and needed pixels), CPU ms per frame, min of {r}: "
              "full decode + sum | selective pass")
        for lam in (0.05, 0.5, 5.0, 100.0):
            for gaps in (False, True):
                image = rng.poisson(lam, shape).astype(dtype)
                if gaps:
                    image[proc.mask] = sentinel
                fr = EncodedFrame(0, 0, "bslz4", args.dtype, shape, encode_frame(image, "bslz4"))
                assert sel.decode_into(fr, out) == tuple(int(v) for v in full_pass(fr))
                tf, ts = timed(full_pass, [fr], r), timed(lambda f: sel.decode_into(f, out), [fr], r)
                print(f"  lambda {lam:6.2f} {'gaps at sentinel' if gaps else 'no gaps         '} "
                      f"{len(fr.blob) / 1e6:5.2f} MB: {tf.min():6.3f} | {ts.min():6.3f}")


if __name__ == "__main__":
    main()

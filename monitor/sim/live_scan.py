"""The simulated scan sent live: a simulated EIGER's series over a real stream sender."""

from __future__ import annotations

from processors.simulate_scan import ScanSimulator
from stream.encoded_frame import EncodedFrame
from stream.stream_sender import Pacer, StreamSender
from stream.wire_encoder import WireEncoder


def stream_scan(sim: ScanSimulator, sender: StreamSender, *, protocol: str, rate: float | str, series: int,
                header_detail: str, progress=None, stop=None) -> tuple[int, float]:
    """Send the simulated scan through ``sender``; returns (frames, seconds). ``stop`` (an Event) ends it early."""
    md = sim.metadata
    wire = WireEncoder(protocol, series, header_detail, unique_id=f"nanomaps-sim-{sim.seed}-{series}")
    count_ns = int(md.count_time_s * 1e9)
    sender.send(wire.start(md), stop)
    pacer = Pacer()
    n = 0
    for k, blob in sim.encoded_frames():
        if stop is not None and stop.is_set():
            break
        if rate != "max":
            pacer.wait_until(k / rate)
        frame = EncodedFrame(series, k, sim.encoding, md.dtype, md.shape, blob)
        start_ns = int(k * md.frame_time_s * 1e9)
        if not sender.send(wire.image(frame, start_ns, start_ns + count_ns, count_ns), stop):
            break
        n += 1
        if progress is not None:
            progress(1)
    seconds = pacer.elapsed()
    sender.send(wire.end(), stop)
    return n, seconds

"""One series as wire messages, whichever the protocol: what replay and the simulator send."""

from __future__ import annotations

from dataclasses import dataclass

from stream.detector_metadata import DetectorMetadata
from stream.encoded_frame import EncodedFrame
from stream.stream1_codec import encode_stream1_end, encode_stream1_image, encode_stream1_start
from stream.stream2_codec import encode_stream2_end, encode_stream2_image, encode_stream2_start, new_unique_id


@dataclass(frozen=True)
class WireEncoder:
    """Encodes start, image and end messages of one series in ``protocol``.

    stream v1 messages are lists of parts, stream2 messages one CBOR item (bytes).
    ``header_detail`` is v1's (``all`` sends flatfield and pixel mask); stream2 sends
    the mask unless it is ``none``.
    """

    protocol: str
    series: int
    header_detail: str = "all"
    channel: str = "threshold_1"
    unique_id: str = ""

    def __post_init__(self) -> None:
        if self.protocol not in ("stream1", "stream2"):
            raise ValueError(f"protocol {self.protocol!r}: use stream1 or stream2")
        if not self.unique_id:
            object.__setattr__(self, "unique_id", new_unique_id())

    def start(self, metadata: DetectorMetadata) -> bytes | list[bytes]:
        if self.protocol == "stream1":
            return encode_stream1_start(self.series, metadata, self.header_detail)
        return encode_stream2_start(self.series, metadata, channel=self.channel, unique_id=self.unique_id,
                                    with_mask=self.header_detail != "none")

    def image(self, frame: EncodedFrame, start_ns: int, stop_ns: int, real_ns: int, *,
              share_blob: bool = False) -> bytes | list[bytes | memoryview]:
        """``share_blob``: stream v1 sends a blob that is a view as it is (see
        :func:`encode_stream1_image`); stream2 copies it into its one CBOR item anyway."""
        if self.protocol == "stream1":
            return encode_stream1_image(frame, start_time_ns=start_ns, stop_time_ns=stop_ns, real_time_ns=real_ns,
                                        share_blob=share_blob)
        return encode_stream2_image(frame, unique_id=self.unique_id, channel=self.channel, start_time_ns=start_ns,
                                    stop_time_ns=stop_ns, real_time_ns=real_ns)

    def end(self) -> bytes | list[bytes]:
        if self.protocol == "stream1":
            return encode_stream1_end(self.series)
        return encode_stream2_end(self.series, self.unique_id)

"""A ring buffer of encoded video, so that every clip starts before its trigger.

Unlike picamera2's ``CircularOutput``, which counts frames, this buffer is bounded
by seconds *and* bytes, and :meth:`PacketRing.preroll` is exact to the keyframe:
it never returns less than the pre-roll asked for (when the buffer holds it) and
never more than one keyframe interval extra.

Example::

    ring = PacketRing(max_seconds=8.0, max_bytes=16 << 20)
    for packet in packets:
        ring.push(packet)
    clip_start = ring.preroll(5.0, now=trigger_time)
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from firmware.packets import EncodedPacket


class PacketRing:
    """The last ``max_seconds`` / ``max_bytes`` of encoded packets.

    ``push`` is O(1) amortised and stores references only: no frame data is copied.
    """

    def __init__(self, max_seconds: float, max_bytes: int) -> None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_seconds = float(max_seconds)
        self.max_bytes = int(max_bytes)
        self._packets: deque[EncodedPacket] = deque()
        # Absolute sequence numbers let keyframe positions survive evictions.
        self._first_seq = 0
        self._keyframes: deque[int] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def span(self) -> float:
        """Seconds between the oldest and newest packet held."""
        if not self._packets:
            return 0.0
        return self._packets[-1].t - self._packets[0].t

    def push(self, packet: EncodedPacket) -> None:
        packets = self._packets
        if packet.keyframe:
            self._keyframes.append(self._first_seq + len(packets))
        packets.append(packet)
        self._bytes += len(packet.data)
        horizon = packet.t - self.max_seconds
        # Keep at least the newest packet even if it alone exceeds max_bytes.
        while len(packets) > 1 and (packets[0].t < horizon or self._bytes > self.max_bytes):
            old = packets.popleft()
            self._bytes -= len(old.data)
            if self._keyframes and self._keyframes[0] == self._first_seq:
                self._keyframes.popleft()
            self._first_seq += 1

    def preroll(self, seconds: float, now: float) -> list[EncodedPacket]:
        """Packets from the latest keyframe at or before ``now - seconds``, up to ``now``.

        When the buffer does not reach back that far (just after start-up, or when
        the byte bound cut it), the clip starts at the oldest keyframe held.  Returns
        an empty list when no keyframe is held at all.
        """
        if not self._keyframes:
            return []
        target = now - seconds
        start_seq = self._keyframes[0]
        # Keyframes are few (one per GOP), so a scan from the newest is cheap.
        for seq in reversed(self._keyframes):
            if self._packets[seq - self._first_seq].t <= target:
                start_seq = seq
                break
        out = list(islice(self._packets, start_seq - self._first_seq, None))
        while out and out[-1].t > now:
            out.pop()
        return out

    def clear(self) -> None:
        self._first_seq += len(self._packets)
        self._packets.clear()
        self._keyframes.clear()
        self._bytes = 0

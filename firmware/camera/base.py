"""The camera interface the controller sees, whatever the hardware.

A backend delivers two things through callbacks that only enqueue: encoded main-
stream packets (privacy masks already applied before encoding) and low-res luma
frames for motion detection.  It can also take a JPEG of the current main frame
(masked too), force the next frame to be a keyframe, and change the masks while running.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from firmware.masks import Polygon
from firmware.packets import EncodedPacket, LoresFrame

PacketSink = Callable[[EncodedPacket], None]
LoresSink = Callable[[LoresFrame], None]


class CameraBackend(Protocol):
    main_size: tuple[int, int]
    lores_size: tuple[int, int]
    fps: float

    def start(self, on_packet: PacketSink, on_lores: LoresSink) -> None:
        """Begin delivering packets and low-res frames to the callbacks."""
        ...

    def stop(self) -> None: ...

    def snapshot_jpeg(self) -> bytes:
        """A JPEG of the latest main-stream frame, with the masks in force when called
        (even if that frame was blanked before the last :meth:`set_masks`)."""
        ...

    def request_keyframe(self) -> None: ...

    def set_masks(self, polygons: Sequence[Polygon]) -> None:
        """Blank exactly these polygons (frame fractions) from the next frame on, in the
        main stream before encoding and in snapshots.  Called by the controller thread
        with the whole effective set (config masks and the owner's signed ones).

        A packet's ``t`` must be no later than the moment its frame was blanked: the
        controller takes a packet stamped after this call returned as blanked with the
        new set (its pre-roll gate), so an asynchronous encoder must not stamp frames
        by when they come out of it."""
        ...

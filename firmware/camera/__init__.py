"""Camera backends: Picamera2 on a Pi (imported lazily), the simulated one in hw_sim."""

from firmware.camera.base import CameraBackend, LoresSink, PacketSink

__all__ = ["CameraBackend", "LoresSink", "PacketSink"]

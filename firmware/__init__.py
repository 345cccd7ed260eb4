"""Firmware for the open camera doorbell: runs on a Raspberry Pi, or on hw_sim."""

__version__ = "0.1.0"

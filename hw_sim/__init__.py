"""Simulated doorbell hardware: gpiozero mock pins, a scripted camera, an x264 encoder."""

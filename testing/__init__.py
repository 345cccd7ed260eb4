"""Throw-away services for the tests and the demo: Mosquitto, Redis and S3 on free
loopback ports, started with the project's own configs and stopped afterwards.

Not installed on a doorbell or a relay; nothing under firmware/, relay/ or footage/
imports it.
"""

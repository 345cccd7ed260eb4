"""Plumbing every command shares and that means nothing on the wire.

One-line argument errors, config-file loading, the paho client factory and the
reconnect policy.  It imports no other part of the project, and every part may
import it; it is not the contract (that is :mod:`protocol`).
"""

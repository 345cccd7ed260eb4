"""Is the wall clock synchronised?  A Pi 4 or Zero 2 W has no real-time clock: until
NTP answers after boot, its time is whatever fake-hwclock saved at the last shutdown,
and a clip recorded then carries wrong times.  Such clips are marked, not hidden.

The kernel knows: ``adjtimex(2)`` returns ``TIME_ERROR`` while the clock is
unsynchronised (``STA_UNSYNC``), whichever daemon (systemd-timesyncd, chrony, ntpd)
disciplines it.

Example::

    if not clock_synchronised():
        log.warning("recording with an unsynchronised clock")
"""

from __future__ import annotations

import ctypes
import ctypes.util

TIME_ERROR = 5
_TIMEX_SIZE = 512  # struct timex is 208 bytes on 64-bit Linux; room to spare


def clock_synchronised() -> bool:
    """True when the kernel says the clock is synchronised (and off Linux: assume so)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return True
    buf = ctypes.create_string_buffer(_TIMEX_SIZE)  # modes = 0: read only
    state = adjtimex(buf)
    return bool(state >= 0 and state != TIME_ERROR)

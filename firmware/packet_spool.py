"""A recording clip's packets, on disk while it records.

A clip may be long (``clips.max_length_s`` up to 600 s) at a high bitrate (up to
25 Mbit/s): held in memory that is about 1.9 GB, more than a Pi has.  The spool
writes each packet's bytes to an unlinked temporary file in the data folder as it
arrives and keeps only ``(t, keyframe, offset, size)`` per packet in memory
(tens of bytes, whatever the bitrate).  It reads as a sequence of
:class:`EncodedPacket`, so :func:`firmware.mp4.write_mp4` remuxes straight from it.

The file is unlinked from the moment it is made: a crash or power cut leaves no
plaintext clip behind under a name (the data folder is the doorbell's, mode 0700).

Example::

    spool = PacketSpool(data_dir / "spool", preroll_packets)
    spool.append(packet)                 # controller thread
    clip = spool.until(t_end)            # a view: the same file, fewer packets
    write_mp4(clip, out)                 # finaliser thread
    spool.close()
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from firmware.packets import EncodedPacket

_Entry = tuple[float, bool, int, int]  # t, keyframe, offset, size


class _Packets(Sequence[EncodedPacket]):
    """Packets of a spool, read from its file on demand: the spool itself, or a view."""

    def __init__(self, spool: PacketSpool, index: list[_Entry]) -> None:
        self._spool, self._index = spool, index

    def __len__(self) -> int:
        return len(self._index)

    @overload
    def __getitem__(self, i: int) -> EncodedPacket: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[EncodedPacket]: ...
    def __getitem__(self, i: int | slice) -> EncodedPacket | Sequence[EncodedPacket]:
        if isinstance(i, slice):
            return _SpoolView(self._spool, self._index[i])
        return self._spool._read(self._index[i])

    def __iter__(self) -> Iterator[EncodedPacket]:
        # A copy: the controller may append to the spool while the finaliser reads.
        for entry in list(self._index):
            yield self._spool._read(entry)


class PacketSpool(_Packets):
    """Append-only packets in a temporary file; see the module doc."""

    def __init__(self, folder: Path, initial: Iterable[EncodedPacket] = ()) -> None:
        super().__init__(self, [])
        self._end = 0
        self._file: Any = None
        self.error: OSError | None = None
        """Why the spool stopped taking packets (a full card); the clip then fails with it.
        The controller's thread must never see a disk error: a ring goes on regardless."""
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed by close()
        except OSError as err:
            self.error = err
            return
        self._fd = self._file.fileno()
        for p in initial:
            self.append(p)

    def append(self, packet: EncodedPacket) -> None:
        if self.error is not None:
            return
        try:
            # pwrite/pread take an offset: the finaliser may read while nothing seeks.
            written = os.pwrite(self._fd, packet.data, self._end)
            if written != len(packet.data):
                raise OSError(errno.ENOSPC, "short write to the clip spool")
        except OSError as err:
            self.error = err
            return
        self._index.append((packet.t, packet.keyframe, self._end, len(packet.data)))
        self._end += len(packet.data)

    @property
    def last_t(self) -> float:
        return self._index[-1][0]

    def until(self, t: float) -> _SpoolView:
        """The packets up to and including time ``t``."""
        return _SpoolView(self, [e for e in self._index if e[0] <= t])

    def _read(self, entry: _Entry) -> EncodedPacket:
        t, key, offset, size = entry
        return EncodedPacket(os.pread(self._fd, size, offset), t, key)

    @property
    def bytes_on_disk(self) -> int:
        return self._end

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _SpoolView(_Packets):
    """Some of a spool's packets (what a clip keeps when it is cut)."""

    def close(self) -> None:
        self._spool.close()

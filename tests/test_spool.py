"""A recording clip's packets live on disk, not in memory (firmware/packet_spool.py)."""

from __future__ import annotations

import io
import os
import tracemalloc

from firmware.packet_spool import PacketSpool
from firmware.packets import EncodedPacket


def packets(n: int, size: int) -> list[EncodedPacket]:
    return [EncodedPacket(os.urandom(size), i / 15, i % 15 == 0) for i in range(n)]


def test_the_spool_reads_back_what_was_written(tmp_path):
    want = packets(40, 3000)
    spool = PacketSpool(tmp_path / "spool", want[:10])
    for p in want[10:]:
        spool.append(p)
    assert list(spool) == want and len(spool) == 40
    assert spool[0] == want[0] and spool[-1] == want[-1] and spool.last_t == want[-1].t
    cut = spool.until(want[19].t)
    assert list(cut) == want[:20] and cut[-1] == want[19]
    assert list(cut[2:5]) == want[2:5]
    spool.close()


def test_the_spool_file_has_no_name(tmp_path):
    spool = PacketSpool(tmp_path / "spool", packets(5, 100))
    assert list((tmp_path / "spool").iterdir()) == [], "unlinked: a crash leaves nothing"
    spool.close()


def test_memory_stays_small_whatever_the_bitrate(tmp_path):
    spool = PacketSpool(tmp_path / "spool")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(150):  # 200 kB a packet (24 Mbit/s at 15 fps): 30 MB of video
        spool.append(EncodedPacket(os.urandom(200_000), i / 15, i % 15 == 0))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert spool.bytes_on_disk == 150 * 200_000
    assert grown < 200_000, f"{grown} bytes held in memory for 30 MB spooled"
    spool.close()


def test_a_spooled_clip_remuxes_to_the_same_mp4_as_a_list(tmp_path):
    from firmware.mp4 import write_mp4
    from hw_sim.encoder import X264Encoder
    from hw_sim.scenes import make_scene

    scene = make_scene("porch", 160, 120)
    enc = X264Encoder(160, 120, 15)
    got: list[EncodedPacket] = []
    for i in range(30):
        got.extend(enc.encode(scene.render(i / 15).rgb, i / 15))
    got.extend(enc.flush())
    spool = PacketSpool(tmp_path / "spool", got)
    a, b = io.BytesIO(), io.BytesIO()
    write_mp4(got, a)
    write_mp4(spool.until(got[-1].t), b)
    assert a.getvalue() == b.getvalue()
    spool.close()

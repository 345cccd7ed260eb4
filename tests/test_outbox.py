from firmware.outbox import NORMAL, URGENT, Outbox


def test_urgent_lane_first_then_in_order(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    a = box.put("t/a", b"clip-1", "id-a", NORMAL)
    b = box.put("t/b", b"clip-2", "id-b", NORMAL)
    ring = box.put("t/ring", b"ring", "id-ring", URGENT)
    assert [r.seq for r in box.due()] == [ring, a, b]
    assert [r.seq for r in box.due(exclude={ring})] == [a, b]
    assert [r.seq for r in box.due(limit=1)] == [ring]


def test_a_row_leaves_only_when_the_relay_confirms(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", confirm_timeout_s=10)
    seq = box.put("t", b"m", "id-1")
    box.mark_sent(seq, now=1000.0)  # PUBACK
    assert len(box) == 1 and box.due(now=1005.0) == []
    assert [r.seq for r in box.due(now=1010.0)] == [seq], "unconfirmed: sent again"
    box.mark_sent(seq, now=1010.0)
    assert box.due(now=1025.0) == [] and box.due(now=1030.0) != [], "the wait doubles"
    assert box.confirm(["id-1", "unknown"]) == 1
    assert len(box) == 0


def test_survives_a_restart(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    seqs = [box.put("t", f"m{i}".encode(), f"id-{i}") for i in range(5)]
    box.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert [r.payload for r in again.due()] == [f"m{i}".encode() for i in range(5)]
    again.reject(seqs[1], "not authorised")
    assert len(again) == 4 and again.rejected_count() == 1


def test_put_wakes_the_sender(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    box.changed.clear()
    box.put("t", b"x", "id-x")
    assert box.changed.is_set()


def test_a_file_from_before_salts_keeps_its_awaiting_rows_without_one(tmp_path):
    """Rows acked before the relay told salts stay, with none: their proofs are then
    refused and they go back to be sent again (and acked with a salt)."""
    import sqlite3

    path = tmp_path / "o.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE awaiting_proof (msg_id TEXT PRIMARY KEY, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL, lane INTEGER NOT NULL, created REAL NOT NULL,"
        " idx INTEGER NOT NULL, leaf TEXT NOT NULL)"
    )
    db.execute("INSERT INTO awaiting_proof VALUES ('m1', 'd/x/deleted', x'00', 1, 5.0, 3, 'ab')")
    db.commit()
    db.close()
    box = Outbox(path)
    assert box.awaiting() == [("m1", "d/x/deleted", b"\0", 3, "ab", 5.0, None)]
    box.prove = True
    box.put("d/x/deleted", b"m", "m2", now=6.0)
    box.confirm(["m2"], {"m2": (4, "cd", "A" * 22 + "==")})
    assert box.awaiting()[1] == ("m2", "d/x/deleted", b"m", 4, "cd", 6.0, "A" * 22 + "==")
    box.close()

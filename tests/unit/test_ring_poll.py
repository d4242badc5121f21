"""Polling the shim's ring (gdbplugin/shim/ring.py ``RingReader.poll_fields``) from a RAM image
built by hand: records come out in ring order across the wrap, a record still being written
(its seq is not index + 1 yet) ends the poll and comes out at the next one, records overwritten
before they were read are counted as lost, ``consume`` writes the read index back, and
``backlog`` says how full the ring is for its reader; ``halted`` and ``overflow``, read alone at
each wait step, say what the whole parsed header says.
"""
from __future__ import annotations

from gdbplugin.shim.abi import (DIAGS, RECORD_FORMAT, RECORD_SIZE, RING_HEADER, RING_MAGIC,
                                 RING_VERSION, offset_of)
from gdbplugin.shim.ring import RingReader

BASE = 0x4000_0000
HEADER = BASE + 0x1000
RECORDS = HEADER + 0x1000
CAPACITY = 4


class Ram:
    """Guest RAM as a bytearray, with the reader's memory interface."""

    def __init__(self):
        self.data = bytearray(0x4000)

    def read(self, pa, n):
        return bytes(self.data[pa - BASE:pa - BASE + n])

    def write(self, pa, data):
        self.data[pa - BASE:pa - BASE + len(data)] = data

    def word(self, field, value):
        self.write(HEADER + offset_of(RING_HEADER, field), value.to_bytes(8, "little"))

    def close(self):
        pass


def ring(written: int, stale: set[int] = frozenset()) -> Ram:
    """A ring the shim has written ``written`` records into (record i at slot i % CAPACITY,
    seq i + 1, pc 0x100 + i); the indices in ``stale`` are still being written."""
    ram = Ram()
    ram.word("magic", RING_MAGIC)
    ram.word("capacity", CAPACITY)
    ram.word("records", RECORDS)
    ram.word("write_index", written)
    for i in range(written):
        seq = i + 1 - CAPACITY if i in stale else i + 1
        ram.write(RECORDS + (i % CAPACITY) * RECORD_SIZE,
                  RECORD_FORMAT.pack(seq, 3, 0, 1, 1, 0, 0, 0x100 + i, 0, 0, 0, 0, 0))
    return ram


def pcs(batch):
    return [f[7] for f in batch]


def test_records_come_in_order_across_the_wrap_and_overwritten_ones_are_lost():
    ram = ring(6)
    r = RingReader(ram, BASE, len(ram.data), header_pa=HEADER)
    batch = r.poll_fields()
    assert pcs(batch) == [0x102, 0x103, 0x104, 0x105] and r.lost == 2 and r.next == 6
    assert [f[0] for f in batch] == [3, 4, 5, 6]            # seq = ring index + 1
    assert r.poll_fields() == []


def test_a_record_being_written_ends_the_poll_until_it_is_complete():
    ram = ring(7, stale={5})
    r = RingReader(ram, BASE, len(ram.data), header_pa=HEADER)
    r.next = 3
    assert pcs(r.poll_fields()) == [0x103, 0x104] and r.next == 5
    assert r.poll_fields() == []
    ram.write(RECORDS + (5 % CAPACITY) * RECORD_SIZE, (6).to_bytes(8, "little"))
    assert pcs(r.poll_fields()) == [0x105, 0x106] and r.lost == 0


def test_limit_and_consume():
    ram = ring(3)
    r = RingReader(ram, BASE, len(ram.data), header_pa=HEADER, consume=True)
    assert pcs(r.poll_fields(2)) == [0x100, 0x101]
    assert int.from_bytes(ram.read(HEADER + offset_of(RING_HEADER, "read_index"), 8),
                          "little") == 2
    assert pcs(r.poll_fields(2)) == [0x102]


def test_backlog_is_what_is_written_and_unread_over_the_capacity():
    ram = ring(3)
    r = RingReader(ram, BASE, len(ram.data), header_pa=HEADER)
    assert r.backlog() == 3 / CAPACITY
    r.poll_fields(2)
    assert r.backlog() == 1 / CAPACITY
    r.poll_fields()
    assert r.backlog() == 0.0


def test_halted_and_overflow_read_alone_agree_with_the_whole_header():
    ram = ring(3)
    ram.write(HEADER + offset_of(RING_HEADER, "version"), RING_VERSION.to_bytes(4, "little"))
    ram.write(HEADER + offset_of(RING_HEADER, "record_size"),
              RECORD_SIZE.to_bytes(4, "little"))
    r = RingReader(ram, BASE, len(ram.data), header_pa=HEADER)
    assert r.halted() is None and r.overflow() == 0 and r.header().halted is None
    ram.word("overflow", 17)
    for code in (DIAGS.ids["ring-full"], 0x7F):            # a code this decoder has no name for
        ram.write(HEADER + offset_of(RING_HEADER, "halted"), code.to_bytes(4, "little"))
        h = r.header()
        assert (r.halted(), r.overflow()) == (h.halted, h.overflow)
        assert r.halted() == DIAGS.get(code, str(code)) and r.overflow() == 17

"""Crashes at every byte offset and flipped bits in every region of the log."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import walstore
from agent.cli import main as cli_main
from walstore import Control, WalStore
from walstore._record import HEADER_SIZE

SEGMENT = 1200


def build(path: Path, records: int = 30, gtid_every: int = 3) -> list[tuple[int, bytes]]:
    """A flushed log of a few segments; returns (end LSN, payload) of every record."""
    out = []
    with WalStore.open(path, segment_size=SEGMENT) as store:
        for i in range(records):
            payload = bytes([i % 256]) * (60 + i)
            gtid = f"0-1-{i}" if i % gtid_every == 0 else None
            out.append((store.append(1 + i // 10, payload, gtid=gtid), payload))
        store.flush()
        store.save_control(Control(term=3, vote="a1", commit_lsn=out[-8][0]))
    return out


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def payloads(path: Path) -> list[bytes]:
    with WalStore.open(path, segment_size=SEGMENT) as store:
        return [r.payload for r in store.read(store.first_lsn)]


def test_crash_at_every_offset_of_the_unsynced_tail(tmp_path: Path) -> None:
    """A crash while appending the last records: every cut reopens with every synced record."""
    base = tmp_path / "base"
    synced = build(base)
    last = segments(base)[-1]
    synced_size = last.stat().st_size
    with WalStore.open(base, segment_size=SEGMENT) as store:
        for i in range(3):  # appended after the last sync, then the crash
            store.append(9, bytes([200 + i]) * 50)
        store.flush()
    full = last.read_bytes()
    work = tmp_path / "work"
    for cut in range(synced_size, len(full) + 1):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        (work / last.name).write_bytes(full[:cut])
        got = payloads(work)
        assert got[: len(synced)] == [p for _end, p in synced], f"cut at {cut} lost synced data"
        # whole records that made it are kept, the torn one is dropped
        assert len(got) in (len(synced), len(synced) + 1, len(synced) + 2, len(synced) + 3)
        with WalStore.open(work, segment_size=SEGMENT) as store:
            assert store.flush_lsn == store.end_lsn
            if cut not in (synced_size, len(full)) and store.repaired_tail is not None:
                assert store.repaired_tail.path.name == last.name


def test_tail_record_bit_flips_are_repaired(tmp_path: Path) -> None:
    base = tmp_path / "base"
    records = build(base)
    last = segments(base)[-1]
    data = last.read_bytes()
    with WalStore.open(base, segment_size=SEGMENT) as store:
        tail = next(iter(store.read(records[-2][0])))
    tail_size = HEADER_SIZE + (len(tail.gtid) if tail.gtid else 0) + len(tail.payload)
    start = len(data) - tail_size
    work = tmp_path / "work"
    for offset in range(start, len(data)):  # header fields, CRC, GTID, payload
        for bit in (0, 7):
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(base, work)
            damaged = bytearray(data)
            damaged[offset] ^= 1 << bit
            (work / last.name).write_bytes(bytes(damaged))
            report = walstore.verify(work)
            assert report.torn_tail is not None and report.torn_tail[1] == start
            assert payloads(work) == [p for _e, p in records[:-1]]


def test_damage_inside_the_last_segment_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base"
    build(base)
    last = segments(base)[-1]
    data = bytearray(last.read_bytes())
    offset = HEADER_SIZE + 5  # payload of the segment's first record; valid records follow
    data[offset] ^= 0x10
    last.write_bytes(bytes(data))
    with pytest.raises(walstore.CorruptionError, match=rf"{last.name}.*offset 0.*valid record"):
        WalStore.open(base, segment_size=SEGMENT)
    assert last.read_bytes() == bytes(data), "a refused open must not modify the file"


@pytest.mark.parametrize("region", ["length", "crc", "term", "lsn", "kind", "flags", "payload"])
def test_sealed_segment_damage_is_refused_and_verify_names_it(
    tmp_path: Path, region: str, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path)
    sealed = segments(tmp_path)[0]
    data = bytearray(sealed.read_bytes())
    # the second record of the sealed segment
    with WalStore.open(tmp_path, segment_size=SEGMENT) as store:
        second = store._segments[0].offsets[1]
    field_offset = {
        "length": 0,
        "crc": 4,
        "term": 8,
        "lsn": 16,
        "kind": 24,
        "flags": 25,
        "payload": HEADER_SIZE + 10,
    }[region]
    data[second + field_offset] ^= 0x04
    sealed.write_bytes(bytes(data))
    with pytest.raises(walstore.CorruptionError) as info:
        WalStore.open(tmp_path, segment_size=SEGMENT)
    assert info.value.path.name == sealed.name and info.value.offset == second
    assert cli_main(["wal", "verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert sealed.name in err and f"byte offset {second}" in err


def test_missing_segment_is_refused(tmp_path: Path) -> None:
    build(tmp_path)
    middle = segments(tmp_path)[1]
    middle.unlink()
    with pytest.raises(walstore.CorruptionError, match="history is missing"):
        WalStore.open(tmp_path, segment_size=SEGMENT)


def test_control_file_damage_is_refused(tmp_path: Path) -> None:
    build(tmp_path)
    control = tmp_path / "control"
    original = control.read_bytes()
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        control.write_bytes(bytes(damaged))
        with pytest.raises(walstore.CorruptionError, match="control"):
            WalStore.open(tmp_path, segment_size=SEGMENT)
    control.write_bytes(original[:-3])
    with pytest.raises(walstore.CorruptionError, match="control"):
        WalStore.open(tmp_path, segment_size=SEGMENT)


def test_commit_beyond_log_end_is_refused(tmp_path: Path) -> None:
    records = build(tmp_path)
    for seg in segments(tmp_path)[1:]:
        seg.unlink()
    assert records
    with pytest.raises(walstore.CorruptionError, match="committed records are missing"):
        WalStore.open(tmp_path, segment_size=SEGMENT)


def test_verify_and_dump_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = build(tmp_path)
    assert cli_main(["wal", "verify", str(tmp_path)]) == 0
    assert f"{len(records)} record(s)" in capsys.readouterr().out
    assert cli_main(["wal", "dump", "--payload-sha", str(tmp_path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(lines) == len(records)
    first = lines[0].split()
    assert first[:6] == ["0", str(records[0][0]), "1", "DATA", "60", "0-1-0"]
    assert len(first[6]) == 16
    # a torn tail is reported by verify, and verify does not repair it
    last = segments(tmp_path)[-1]
    last.write_bytes(last.read_bytes()[:-7])
    assert cli_main(["wal", "verify", str(tmp_path)]) == 1
    assert "torn tail" in capsys.readouterr().err
    assert cli_main(["wal", "verify", str(tmp_path)]) == 1


def test_verify_and_dump_an_agents_data_dir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`binkeeper wal verify|dump` on an agent's data_dir check every timeline's WAL in
    timelines/<id>/ (the layout `binkeeper run` writes), control files included; a
    directory with no WAL is an error, not `ok: 0 segment(s)`."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["wal", "verify", str(empty)]) == 2
    assert "holds no WAL" in capsys.readouterr().err
    assert cli_main(["wal", "dump", str(empty)]) == 2

    data_dir = tmp_path / "data"
    first, second = (data_dir / "timelines" / name for name in ("a" * 32, "b" * 32))
    records = build(first) + build(second)
    assert cli_main(["wal", "verify", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert str(first) in out and str(second) in out
    assert cli_main(["wal", "dump", str(data_dir)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(lines) == len(records)

    sealed = segments(second)[0]
    original = sealed.read_bytes()
    damaged = bytearray(original)
    damaged[HEADER_SIZE + 5] ^= 0x10  # a payload byte of the first record
    sealed.write_bytes(bytes(damaged))
    assert cli_main(["wal", "verify", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert sealed.name in err and "byte offset 0" in err
    assert cli_main(["wal", "dump", str(data_dir)]) == 1
    sealed.write_bytes(original)

    control = first / "control"
    original = control.read_bytes()
    damaged = bytearray(original)
    damaged[-2] ^= 0x01  # inside the JSON body: caught by the control file's CRC
    control.write_bytes(bytes(damaged))
    assert cli_main(["wal", "verify", str(data_dir)]) == 1
    assert "DAMAGED: control at byte offset" in capsys.readouterr().err
    control.write_bytes(original)
    assert cli_main(["wal", "verify", str(data_dir)]) == 0

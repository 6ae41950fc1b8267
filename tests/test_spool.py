"""The disk spool (``hiveloop_async._spool``): durable, ordered, capped, shared, crash-safe.

Every test uses a real directory and real processes (``subprocess`` with this interpreter);
nothing about the file system is mocked.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import orjson
import pytest

from hiveloop_async import HiveLoopConfigError
from hiveloop_async._spool import Spool, open_spool

DEST = "http://127.0.0.1:9/v1/ingest"
REPO = Path(__file__).resolve().parent.parent


def body(i: int, size: int = 0) -> bytes:
    return orjson.dumps({"envelope": {"agent_id": "a"}, "events": [{"i": i}], "pad": "x" * size})


def replay_all(spool: Spool) -> list[int]:
    out = []
    for batch in spool.replay():
        out.append(orjson.loads(batch.body)["events"][0]["i"])
        spool.confirm(batch)
    return out


def test_batches_replay_in_write_order_and_are_deleted_once_confirmed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for i in range(20):
        assert spool.write(body(i), DEST, 1)
    assert spool.pending_batches() == 20
    batch = spool.claim_next()
    assert batch is not None
    assert (batch.destination, batch.events) == (DEST, 1)
    assert orjson.loads(batch.body)["events"] == [{"i": 0}]
    spool.release(batch)  # not delivered: back in its place
    assert replay_all(spool) == list(range(20))
    assert spool.pending_batches() == 0
    assert list((tmp_path / "spool" / "claimed").iterdir()) == []
    stats = spool.stats()
    assert stats["written_batches"] == stats["replayed_batches"] == 20
    assert stats["replayed_events"] == 20 and stats["released_batches"] == 1
    assert stats["errors"] == 0


def test_an_unconfirmed_batch_goes_back_when_the_iterator_moves_on_or_closes(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.write(body(i), DEST, 1)
    it = spool.replay()
    first = next(it)
    # Neither confirmed nor released: it went back and, being the oldest, comes again.
    again = next(it)
    assert again.name == first.name
    spool.confirm(again)
    third = next(it)
    assert orjson.loads(third.body)["events"] == [{"i": 1}]
    it.close()  # releases the one it holds
    assert replay_all(spool) == [1, 2]


def test_files_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    old = os.umask(0o022)
    try:
        spool = Spool(directory)
        spool.write(body(1), DEST, 1)
    finally:
        os.umask(old)
    for sub in (directory, *(directory / n for n in ("tmp", "claimed", "corrupt", "locks"))):
        assert stat.S_IMODE(sub.stat().st_mode) == 0o700, sub
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_size_cap_removes_the_oldest_first_and_counts_them(tmp_path: Path) -> None:
    one = len(body(0, 1000)) + 100  # a batch file: header, metadata, body
    spool = Spool(tmp_path, max_bytes=one * 5)
    for i in range(12):
        assert spool.write(body(i, 1000), DEST, 3)
    kept = replay_all(spool)
    assert kept == list(range(12 - len(kept), 12))  # the newest, in order
    assert 3 <= len(kept) <= 5
    stats = spool.stats()
    assert stats["evicted_batches"] == 12 - len(kept)
    assert stats["evicted_events"] == 3 * (12 - len(kept))
    # One batch larger than the whole cap is refused (counted), nothing else is lost.
    assert not spool.write(body(99, one * 6), DEST, 7)
    assert spool.stats()["oversize_events"] == 7


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_or_truncated_files_are_skipped_counted_and_moved_aside(
    tmp_path: Path, damage: str
) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.write(body(i, 200), DEST, 1)
    victim = sorted(tmp_path.glob("*.hls"))[1]
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) - 50])
    elif damage == "flip":
        victim.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    elif damage == "garbage":
        victim.write_bytes(b"\x00not a spool file at all" * 3)
    else:
        victim.write_bytes(b"")
    assert replay_all(spool) == [0, 2]
    assert spool.stats()["corrupt_files"] == 1
    assert [p.name for p in (tmp_path / "corrupt").iterdir()] == [victim.name]
    assert spool.stats()["errors"] == 0


def test_bad_configuration_and_unusable_directories(tmp_path: Path) -> None:
    with pytest.raises(HiveLoopConfigError):
        Spool(tmp_path, max_bytes=0)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(HiveLoopConfigError) as info:
        Spool(a_file)
    assert "cannot be used" in str(info.value)


def test_io_errors_are_counted_never_raised(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    (tmp_path / "s" / "tmp").rmdir()  # the tests run as root: modes would not stop a write
    assert spool.write(body(1), DEST, 1) is False
    assert spool.stats()["errors"] == 1


def test_one_spool_per_directory_per_process(tmp_path: Path) -> None:
    a = open_spool(tmp_path)
    assert open_spool(str(tmp_path)) is a
    assert open_spool(tmp_path / ".") is a


async def test_meant_for_worker_threads_from_async_code(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    oks = [await anyio.to_thread.run_sync(spool.write, body(i), DEST, 1) for i in range(5)]
    assert all(oks)
    got = []
    while (batch := await anyio.to_thread.run_sync(spool.claim_next)) is not None:
        got.append(orjson.loads(batch.body)["events"][0]["i"])
        await anyio.to_thread.run_sync(spool.confirm, batch)
    assert got == [0, 1, 2, 3, 4]


# -- several processes ---------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, orjson
    from hiveloop_async._spool import Spool
    directory, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spool = Spool(directory)
    for i in range(n):
        assert spool.write(orjson.dumps({"id": f"{tag}-{i}"}), "dest", 1)
    print("written", flush=True)
    """
)

REPLAYER = textwrap.dedent(
    """
    import sys, orjson
    from hiveloop_async._spool import Spool
    spool = Spool(sys.argv[1])
    got = []
    for batch in spool.replay():
        got.append(orjson.loads(batch.body)["id"])
        spool.confirm(batch)
    print(orjson.dumps(got).decode(), flush=True)
    """
)


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_several_processes_share_one_directory_and_replay_each_batch_once(
    tmp_path: Path,
) -> None:
    directory = str(tmp_path / "shared")
    writers = [_python(WRITER, directory, f"w{k}", "60") for k in range(3)]
    for proc in writers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    replayers = [_python(REPLAYER, directory) for _ in range(3)]
    seen: list[str] = []
    for proc in replayers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        ids = orjson.loads(out)
        seen.extend(ids)
        # each replayer got its share in write order per writer
        for k in range(3):
            mine = [int(x.split("-")[1]) for x in ids if x.startswith(f"w{k}-")]
            assert mine == sorted(mine)
    assert sorted(seen) == sorted(f"w{k}-{i}" for k in range(3) for i in range(60))
    assert len(seen) == len(set(seen)) == 180
    assert Spool(directory).pending_batches() == 0


def test_claims_of_a_dead_replayer_are_recovered(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    spool = Spool(directory)
    for i in range(3):
        spool.write(body(i), DEST, 1)
    spool.close()
    script = textwrap.dedent(
        """
        import os, signal, sys
        from hiveloop_async._spool import Spool
        spool = Spool(sys.argv[1])
        batch = spool.claim_next()
        print(batch.name, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # dies holding the claim
        """
    )
    proc = _python(script, str(directory))
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert len(list((directory / "claimed").iterdir())) == 1
    fresh = Spool(directory)  # finds the dead owner's lock free and takes the claim back
    assert fresh.stats()["recovered_claims"] == 1
    assert replay_all(fresh) == [0, 1, 2]


BIG = 64 * 1024 * 1024


def test_a_writer_killed_mid_write_leaves_nothing_partial_visible(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    script = textwrap.dedent(
        """
        import sys, orjson
        from hiveloop_async._spool import Spool
        spool = Spool(sys.argv[1], max_bytes=1 << 40)
        for i in range(3):
            spool.write(orjson.dumps({"i": i}), "dest", 1)
        print("small ones written", flush=True)
        big = b"x" * BIG
        while True:
            spool.write(big, "dest", 1)
        """
    )
    proc = _python(f"BIG = {BIG}\n" + script, str(directory))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "small ones written"
    tmp = directory / "tmp"
    partial_seen = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sizes = []
        for p in tmp.iterdir():
            try:
                sizes.append(p.stat().st_size)
            except FileNotFoundError:
                continue
        if any(0 < size < 512 * 1024 * 1024 for size in sizes):
            partial_seen = max(sizes)
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert partial_seen, "never caught the writer mid-write"
    leftovers = list(tmp.iterdir())
    spool = Spool(directory, max_bytes=1 << 40)  # the dead writer's temporary file is removed
    batches = []
    for batch in spool.replay():
        batches.append(batch)
        spool.confirm(batch)
    small = [orjson.loads(b.body) for b in batches if len(b.body) < 100]
    assert small == [{"i": 0}, {"i": 1}, {"i": 2}]
    # A big batch is replayed only if its write had finished before the kill: never partial.
    assert all(len(b.body) == BIG for b in batches if len(b.body) >= 100)
    assert spool.stats()["corrupt_files"] == 0
    assert leftovers, "the killed writer left its temporary file"
    assert list(tmp.iterdir()) == []


def test_replay_for_one_destination_leaves_the_others_in_place(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(6):
        spool.write(body(i), DEST if i % 2 else "http://other/v1/ingest", 1)
    got = []
    for batch in spool.replay(DEST):
        got.append(orjson.loads(batch.body)["events"][0]["i"])
        spool.confirm(batch)
    assert got == [1, 3, 5]
    assert spool.pending_batches() == 3
    assert replay_all(spool) == [0, 2, 4]


def test_replay_killed_between_delivery_and_confirm_still_arrives_exactly_once(
    tmp_path: Path,
) -> None:
    """At-least-once from the spool, exactly once at the server (it deduplicates event_id)."""
    import uuid

    from hiveloop_async._server import ServerThread

    directory = tmp_path / "s"
    spool = Spool(directory)
    ids = []
    for b in range(5):
        events = []
        for i in range(10):
            ids.append(str(uuid.uuid4()))
            events.append(
                {
                    "event_id": ids[-1],
                    "timestamp": f"2026-12-06T19:00:{b:02d}.{i:03d}Z",
                    "event_type": "custom",
                    "payload": {"kind": "probe", "data": {"batch": b, "i": i}},
                }
            )
        spool.write(orjson.dumps({"envelope": {"agent_id": "spooled"}, "events": events}), "", 10)
    spool.close()
    replayer = textwrap.dedent(
        """
        import os, signal, sys, urllib.request
        from hiveloop_async._spool import Spool
        spool = Spool(sys.argv[1])
        for n, batch in enumerate(spool.replay()):
            request = urllib.request.Request(
                sys.argv[2] + "/v1/ingest", data=batch.body, method="POST",
                headers={"Authorization": "Bearer hb_test_key", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200
            if n == 2:  # delivered, not yet confirmed: the crash that causes a duplicate
                os.kill(os.getpid(), signal.SIGKILL)
            spool.confirm(batch)
        """
    )
    with ServerThread(memory=True) as srv:
        proc = _python(replayer, str(directory), srv.url)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err
        assert srv.event_count() == 30
        fresh = Spool(directory)  # the dead replayer's claim comes back
        assert fresh.stats()["recovered_claims"] == 1
        assert fresh.pending_batches() == 3
        proc = _python(replayer.replace("if n == 2:", "if False:"), str(directory), srv.url)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert srv.event_count() == 50
        stored = [e["event_id"] for e in srv.events()]
    assert sorted(stored) == sorted(ids)
    assert fresh.pending_batches() == 0

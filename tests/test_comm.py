"""Transports, byte accounting and the network model; MPI runs through mpiexec subprocesses."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import numba
import numpy as np
import pytest
from mpi4py import MPI

from mpicomp.comm import (
    SIZE_PREFIX_BYTES,
    ByteCounter,
    LocalTransport,
    MPITransport,
    NetworkModel,
    RoundBytes,
    accounting,
    balanced_master_share,
    check_launcher_size,
    launcher_size,
    layout_summary,
    make_transport,
    split_bytes,
    worker_range,
)
from mpicomp.comm.accounting import split_each, whole_message_split
from mpicomp.comm.mpi import joined, node_share, share_kernel_threads
from mpicomp.compressors import make
from mpicomp.rng import RandomKey
from mpicomp.wire import HEADER_BYTES, MessageError, MessageRows, pack_message
from tests.mpi_scripts.capabilities import CASES, exercise
from tests.mpi_scripts.traffic import (
    ALL_EMPTY_ROUND,
    DOWNLINK,
    EMPTY_DOWNLINK_ROUND,
    payload_and_header,
    traffic,
)

SCRIPTS = Path(__file__).parent / "mpi_scripts"
CRC_BYTES = 4
SEED = 20240611
ROUNDS = 6


def identity_message(d: int, worker: int = 0, dtype: str = "float64") -> bytes:
    codec = make("identity") if dtype == "float64" else make(f"identity(dtype='{dtype}')")
    return bytes(codec.encode(np.linspace(-1.0, 1.0, d), RandomKey(1, 0, worker)))


def run_local(n_workers: int, rounds: int = ROUNDS, seed: int = SEED) -> list[dict]:
    """Per-round counts of LocalTransport on the shared test traffic."""
    transport = LocalTransport(n_workers)
    counted = []
    for rnd in range(rounds):
        uploads = [traffic(seed, rnd, w) for w in range(n_workers)]
        gathered = transport.gather(uploads)
        assert [bytes(g) for g in gathered] == uploads
        assert bytes(transport.broadcast(traffic(seed, rnd, DOWNLINK))) == traffic(seed, rnd, DOWNLINK)
        counted.append(transport.counter.end_round().to_dict())
    return counted


# --- layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_workers", "size"), [(1, 1), (8, 4), (5, 4), (3, 4), (1000, 7), (2, 2)])
def test_worker_blocks_partition_the_workers_in_order(n_workers, size):
    blocks = [worker_range(n_workers, size, rank) for rank in range(size)]
    assert [w for block in blocks for w in block] == list(range(n_workers))
    sizes = [len(block) for block in blocks]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("share", [0.0, 1e-9, 0.3, 0.5, 0.56, 0.8, 0.999, 1.0])
@pytest.mark.parametrize(
    ("n_workers", "size"), [(1, 1), (8, 4), (5, 4), (3, 4), (14, 3), (192, 3), (1000, 7), (2, 2), (10_000, 32)]
)
def test_rank_0_hosts_its_share_of_workers(n_workers, size, share):
    """``master_share`` s: the blocks still partition the workers in order, rank r >= 1 starts exactly at
    ``floor(n (s + r - 1) / (s + size - 1))`` (in floating point, 14 workers on 3 ranks at s = 0.8 came
    out 4, 4, 6), so the other ranks differ by one worker at most, and s = 1 is the even split."""
    blocks = [worker_range(n_workers, size, rank, share) for rank in range(size)]
    assert [w for block in blocks for w in block] == list(range(n_workers))
    s = Fraction(share)
    starts = [0, *(math.floor(n_workers * (s + r - 1) / (s + size - 1)) for r in range(1, size)), n_workers]
    assert blocks == [range(start, stop) for start, stop in pairwise(starts)]
    others = [len(block) for block in blocks[1:]]
    if others:
        assert max(others) - min(others) <= 1
        ideal = share * n_workers / (share + size - 1)  # rank 0's exact share of the workers
        assert abs(len(blocks[0]) - ideal) <= 1
    if share == 1.0:
        assert blocks == [range(r * n_workers // size, (r + 1) * n_workers // size) for r in range(size)]
    if share == 0.0 and size > 1:
        assert len(blocks[0]) == 0


def test_balanced_master_share_evens_out_the_busy_time():
    """4 ranks x 300 workers, 1 s per worker, 60 s of master work on rank 0: the share s it proposes
    gives rank 0 (its workers plus the master) and every other rank the same busy time."""
    workers = np.array([75.0, 75.0, 75.0, 75.0])
    busy = workers * 1.0 + np.array([60.0, 0.0, 0.0, 0.0])
    share = balanced_master_share(busy, workers)
    assert share is not None and 0 < share < 1
    hosted = [len(worker_range(300, 4, rank, share)) for rank in range(4)]
    exact = share * 300 / (share + 3)
    assert abs(hosted[0] - exact) <= 1 and abs((exact + 60.0) - (300 - exact) / 3) < 1e-9
    assert balanced_master_share(np.array([75.0, 80.0, 75.0, 75.0]), workers) is None  # rank 0 not the slowest
    assert balanced_master_share(np.array([500.0, 75.0, 75.0, 75.0]), workers) == 0.0  # the master alone is too much
    assert balanced_master_share(np.array([10.0, 0.0]), np.array([4.0, 0.0])) is None  # nothing to compare with
    no_worker_on_0 = np.array([0.0, 1.0, 0.0, 1.0])  # 2 workers on 4 ranks: no share moves one off rank 0
    assert balanced_master_share(np.array([5.0, 1.0, 0.1, 1.0]), no_worker_on_0) is None


@pytest.mark.parametrize("bad", [-0.1, 1.5, "half", True, None])
def test_master_share_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="master_share must be a number in"):
        make_transport(4, master_share=bad)


def test_layout_summary_text():
    assert layout_summary(8, 4) == (
        "4 ranks x 8 workers: rank 0 -> workers 0-1, rank 1 -> workers 2-3, rank 2 -> workers 4-5, rank 3 -> workers 6-7"
    )
    assert layout_summary(3, 4) == (
        "4 ranks x 3 workers: rank 0 -> no workers, rank 1 -> worker 0, rank 2 -> worker 1, rank 3 -> worker 2"
    )
    assert LocalTransport(1).layout_summary() == "1 rank x 1 worker: rank 0 -> worker 0"
    assert layout_summary(8, 3, master_share=0.5) == (
        "3 ranks x 8 workers: rank 0 -> worker 0, rank 1 -> workers 1-3, rank 2 -> workers 4-7"
    )
    long = layout_summary(100, 20)
    assert long.count("rank ") == 8 and ", ..., rank 18 -> workers 90-94, rank 19 -> workers 95-99" in long


# --- LocalTransport --------------------------------------------------------------------------


def test_local_round_trip_keeps_worker_order_and_empty_uploads():
    transport = LocalTransport(4)
    assert (transport.rank, transport.size, transport.is_master, transport.local_workers) == (0, 1, True, range(4))
    uploads = [identity_message(3, 0), b"", identity_message(5, 2) + identity_message(1, 2), b""]
    gathered = transport.gather(uploads)
    assert [bytes(g) for g in gathered] == uploads
    assert all(isinstance(g, memoryview) and g.readonly for g in gathered)
    down = identity_message(7)
    assert bytes(transport.broadcast(down)) == down
    assert transport.agree(3) == 3
    assert transport.all_equal(b"anything")


def test_local_gather_copies_mutable_buffers():
    transport = LocalTransport(1)
    upload = bytearray(identity_message(2))
    gathered = transport.gather([upload])
    original = bytes(upload)
    upload[-1] ^= 0xFF
    assert bytes(gathered[0]) == original


def test_local_gather_views_read_only_buffers_without_copying():
    message, other = identity_message(3), identity_message(2)
    writable = np.frombuffer(other, dtype=np.uint8).copy()
    gathered = LocalTransport(2).gather([memoryview(message)[:], writable])
    assert gathered[0].obj is message
    assert bytes(gathered[1]) == other and gathered[1].readonly and gathered[1].obj is not writable
    with pytest.raises(ValueError, match="non-contiguous ndarray"):
        LocalTransport(1).gather([np.zeros(8, dtype=np.uint8)[::2]])


def test_local_argument_errors():
    transport = LocalTransport(2)
    with pytest.raises(ValueError, match="hosts 2 workers .* passed 1 uploads"):
        transport.gather([b""])
    with pytest.raises(ValueError, match="must pass its downlink message"):
        transport.broadcast(None)
    with pytest.raises(ValueError, match="must pass the code"):
        transport.agree(None)
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="n_workers must be a positive integer"):
            LocalTransport(bad)


def test_announced_sizes_change_no_count_and_are_checked():
    uploads, down = [identity_message(3, w) for w in range(3)], identity_message(3)
    plain, announced = LocalTransport(3), LocalTransport(3)
    plain.gather(uploads), plain.broadcast(down)
    gathered = announced.gather(uploads, size=len(uploads[0]))
    assert [bytes(g) for g in gathered] == uploads
    assert bytes(announced.broadcast(down, size=len(down))) == down
    assert plain.counter.end_round() == announced.counter.end_round()
    with pytest.raises(ValueError, match=r"uploads of \[0, 44\] bytes, announced 44"):
        announced.gather([uploads[0], b"", uploads[2]], size=44)
    rows = MessageRows([np.frombuffer(b"".join(uploads), dtype=np.uint8).reshape(3, -1)])
    with pytest.raises(ValueError, match=r"uploads of \[44\] bytes, announced 45"):
        announced.gather(rows, size=45)
    with pytest.raises(ValueError, match="downlink message has 44 bytes, announced 45"):
        announced.broadcast(down, size=45)


def test_local_bookkeeping_is_not_counted():
    transport = LocalTransport(3)
    transport.all_equal(b"x")
    transport.agree(1)
    assert transport.counter.end_round() == RoundBytes.zeros(3, complete=True)


# --- accounting ------------------------------------------------------------------------------


@pytest.mark.parametrize(("d", "dtype", "itemsize"), [(0, "float64", 8), (1, "float64", 8), (37, "float32", 4)])
def test_split_bytes_of_identity_messages(d, dtype, itemsize):
    message = identity_message(d, dtype=dtype)
    assert split_bytes(message) == (itemsize * d, HEADER_BYTES + CRC_BYTES)
    assert len(message) == itemsize * d + HEADER_BYTES + CRC_BYTES


def test_split_bytes_of_crafted_concatenations():
    with_scalars = pack_message(5, 100, (1.0, 2.0, 3.0), b"\x01" * 13, crc=True)
    no_crc = pack_message(7, 9, (), b"\x02" * 30, crc=False)
    empty_payload = pack_message(2, 0, (4.0,), b"", crc=False)
    assert split_bytes(with_scalars) == (13, HEADER_BYTES + 24 + CRC_BYTES)
    assert split_bytes(no_crc) == (30, HEADER_BYTES)
    assert split_bytes(empty_payload) == (0, HEADER_BYTES + 8)
    assert split_bytes(with_scalars + no_crc + empty_payload) == (43, 3 * HEADER_BYTES + 32 + CRC_BYTES)
    assert split_bytes(b"") == (0, 0)
    assert split_bytes(np.frombuffer(no_crc, dtype=np.uint8)) == (30, HEADER_BYTES)


def test_uploads_split_at_once_are_split_one_by_one():
    """``split_each`` (alike one-message uploads split once) and ``count_uploads`` give what
    ``split_bytes`` of each upload gives: for alike uploads, uploads of two messages each (same first
    header), skips among them, and headers differing in one scalar count or the CRC flag."""
    one = [pack_message(3, 40, (float(w),), bytes([w]) * 45, crc=False) for w in range(6)]
    two = [message + pack_message(1, 2, (), b"\0" * w, crc=False) for w, message in enumerate(one)]
    mixed = [one[0], b"", pack_message(3, 40, (), b"\1" * 45), one[3], pack_message(3, 40, (1.0,), b"\1" * 45)]
    for uploads in (one, two, mixed, one[:1], []):
        payloads, headers = split_each(uploads)
        assert list(zip(payloads.tolist(), headers.tolist(), strict=True)) == [split_bytes(u) for u in uploads]
        counter = ByteCounter(12, complete=False)
        counter.count_uploads(range(3, 3 + len(uploads)), uploads)
        counts = counter.end_round()
        sizes = [sum(split_bytes(u)) + SIZE_PREFIX_BYTES for u in uploads]
        assert counts.up_bytes.tolist() == [0] * 3 + sizes + [0] * (9 - len(uploads))
        assert counts.up_payload == sum(split_bytes(u)[0] for u in uploads)
        assert counts.up_header == sum(split_bytes(u)[1] for u in uploads)
        assert counts.uploads[3:].tolist()[: len(uploads)] == [int(len(u) > 0) for u in uploads]
        assert counts.skips[3:].tolist()[: len(uploads)] == [int(len(u) == 0) for u in uploads]


def test_split_bytes_agrees_with_the_full_decoder_on_random_traffic():
    for rnd in range(ROUNDS):
        for worker in (*range(8), DOWNLINK):
            upload = traffic(SEED, rnd, worker)
            payload, header = split_bytes(upload)
            assert (payload, header) == payload_and_header(upload)
            assert payload + header == len(upload)


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (identity_message(4)[:-1], "truncated"),
        (identity_message(4) + identity_message(1)[:10], "truncated"),
        (b"XY" + identity_message(4)[2:], "bad magic"),
    ],
)
def test_split_bytes_rejects_malformed_buffers(buf, reason):
    with pytest.raises(MessageError, match=reason):
        split_bytes(buf)


def test_counter_arithmetic_per_round_and_per_worker():
    counter = ByteCounter(3, complete=True)
    first, second = identity_message(10, 0), pack_message(3, 5, (0.5,), b"\x00" * 7, crc=False)
    counter.count_uploads(range(3), [first, b"", second])
    counter.count_downlink(identity_message(2))
    counts = counter.end_round()
    assert (counts.up_payload, counts.up_header, counts.up_control) == (80 + 7, 20 + 24, 3 * SIZE_PREFIX_BYTES)
    assert (counts.down_payload, counts.down_header, counts.down_control) == (16, 20, SIZE_PREFIX_BYTES)
    assert counts.up_bytes.tolist() == [len(first) + 8, 8, len(second) + 8]
    assert counts.uploads.tolist() == [1, 0, 1]
    assert counts.skips.tolist() == [0, 1, 0]
    assert counts.up_bytes.sum() == counts.up_total
    assert counts.down_bytes == 16 + 20 + 8
    assert counts.complete


def test_counter_all_empty_round_costs_only_size_prefixes_and_resets():
    counter = ByteCounter(4, complete=True)
    counter.count_uploads(range(4), [b""] * 4)
    counter.count_downlink(b"")
    counts = counter.end_round()
    assert counts.to_dict() == {
        "up_payload": 0,
        "up_header": 0,
        "up_control": 32,
        "down_payload": 0,
        "down_header": 0,
        "down_control": 8,
        "switch_packets": 0,
        "overflow_packets": 0,
        "fallback_bytes": 0,
        "up_bytes": [8, 8, 8, 8],
        "uploads": [0, 0, 0, 0],
        "skips": [1, 1, 1, 1],
        "complete": True,
    }
    assert counter.end_round() == RoundBytes.zeros(4, complete=True)


def test_counter_totals_add_rounds_and_two_gathers_in_one_round():
    counter = ByteCounter(2, complete=True)
    message = identity_message(3)
    counter.count_uploads(range(2), [message, b""])
    counter.count_uploads(range(2), [message, message])
    once = counter.end_round()
    assert once.uploads.tolist() == [2, 1] and once.up_control == 4 * SIZE_PREFIX_BYTES
    assert once.up_bytes.tolist() == [2 * (len(message) + 8), len(message) + 16]
    counter.count_uploads(range(2), [b"", message])
    twice = counter.end_round()
    assert counter.totals == once + twice
    assert counter.totals.uploads.tolist() == [2, 2]


def test_alike_gathers_are_added_to_each_worker_when_the_round_ends():
    """Alike uploads are counted per worker at the end of the round (one NumPy pass a round): several such
    gathers over overlapping ranges add up per worker, beside an unlike gather, and the next round starts at 0."""
    counter = ByteCounter(4, complete=True)
    short, long = identity_message(3), identity_message(5)
    counter.count_uploads(range(0, 2), [short, short])
    counter.count_uploads(range(1, 4), [long, long, long])
    counter.count_uploads(range(0, 2), [short, short])
    counter.count_uploads(range(2, 4), [b"", short])
    first = counter.end_round()
    up = len(short) + SIZE_PREFIX_BYTES, len(long) + SIZE_PREFIX_BYTES
    assert first.up_bytes.tolist() == [2 * up[0], 2 * up[0] + up[1], up[1] + SIZE_PREFIX_BYTES, up[1] + up[0]]
    assert first.uploads.tolist() == [2, 3, 1, 2] and first.skips.tolist() == [0, 0, 1, 0]
    assert sum(first.up_bytes) == first.up_total
    counter.count_uploads(range(0, 2), [short, short])
    second = counter.end_round()
    assert second.up_bytes.tolist() == [up[0], up[0], 0, 0] and second.uploads.tolist() == [1, 1, 0, 0]
    assert counter.totals == first + second


def test_whole_message_split_is_remembered_by_header_and_length():
    message = identity_message(6)
    payload = 6 * 8
    assert whole_message_split(memoryview(message)) == (payload, len(message) - payload)
    assert whole_message_split(memoryview(message + message)) is None  # two messages: not one whole one
    with pytest.raises(MessageError):
        whole_message_split(memoryview(message[:-1]))  # truncated: the header's size is not there
    for d in range(2 * accounting._SPLITS_KEPT):  # more kinds than it keeps: its memory stays bounded
        whole_message_split(memoryview(identity_message(d)))
    assert len(accounting._SPLITS) <= accounting._SPLITS_KEPT
    assert whole_message_split(memoryview(message)) == (payload, len(message) - payload)


def test_incomplete_counter_counts_only_its_workers():
    counter = ByteCounter(4, complete=False)
    message = identity_message(2, 2)
    counter.count_uploads(range(2, 4), [message, b""])
    counts = counter.end_round()
    assert counts.up_bytes.tolist() == [0, 0, len(message) + 8, 8]
    assert counts.up_control == 16 and not counts.complete
    with pytest.raises(ValueError, match="counts of 4 and 3 workers"):
        counts + RoundBytes.zeros(3, complete=True)


def test_counts_are_independent_of_the_rank_layout():
    """Splitting the same uploads over any number of counters sums to the master's per-worker counts."""
    n_workers = 7
    uploads = [traffic(SEED, 0, w) for w in range(n_workers)]
    master = ByteCounter(n_workers, complete=True)
    master.count_uploads(range(n_workers), uploads)
    whole = master.end_round()
    for size in (2, 3, 7):
        parts = RoundBytes.zeros(n_workers, complete=True)
        for rank in range(size):
            local = ByteCounter(n_workers, complete=True)
            block = worker_range(n_workers, size, rank)
            local.count_uploads(block, uploads[block.start : block.stop])
            parts = parts + local.end_round()
        assert parts == whole


# --- network model ---------------------------------------------------------------------------


def test_network_model_formulas():
    up = np.array([100, 300, 0, 600])
    serial = NetworkModel(latency=0.5, bandwidth=100.0, topology="serial")
    parallel = NetworkModel(latency=0.5, bandwidth=100.0, topology="parallel")
    assert serial.uplink_seconds(up) == pytest.approx(0.5 + 1000 / 100.0, rel=1e-15)
    assert parallel.uplink_seconds(up) == pytest.approx(0.5 + 600 / 100.0, rel=1e-15)
    assert serial.downlink_seconds(250) == pytest.approx(0.5 + 2.5, rel=1e-15)
    assert serial.round_seconds(up, 250) == pytest.approx(10.5 + 3.0, rel=1e-15)
    assert parallel.round_seconds(up, 250) == pytest.approx(6.5 + 3.0, rel=1e-15)
    assert NetworkModel(0.0, float("inf")).round_seconds(up, 10) == 0.0
    switch = NetworkModel(latency=0.5, bandwidth=100.0, topology="switch")
    assert switch.round_seconds(up, 250) == parallel.round_seconds(up, 250)
    ring = NetworkModel(latency=0.5, bandwidth=100.0, topology="ring")  # n = 4: 6 steps of 1/4 of 600 bytes
    assert ring.round_seconds(up, 250) == pytest.approx(6 * 0.5 + 6 / 4 * 600 / 100.0, rel=1e-15)
    assert ring.round_seconds(up[:1], 250) == 0.0  # one worker: nothing to reduce


def test_network_model_on_counted_round():
    counter = ByteCounter(2, complete=True)
    counter.count_uploads(range(2), [identity_message(4), b""])
    counter.count_downlink(identity_message(4))
    counts = counter.end_round()
    model = NetworkModel(latency=1e-3, bandwidth=1e3)
    expected = 2e-3 + (len(identity_message(4)) + 8 + 8) / 1e3 + (len(identity_message(4)) + 8) / 1e3
    assert model.round_seconds(counts.up_bytes, counts.down_bytes) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latency": -1.0, "bandwidth": 1.0}, "latency must be"),
        ({"latency": float("nan"), "bandwidth": 1.0}, "latency must be"),
        ({"latency": True, "bandwidth": 1.0}, "latency must be"),
        ({"latency": 0.0, "bandwidth": 0.0}, "bandwidth must be"),
        ({"latency": 0.0, "bandwidth": "fast"}, "bandwidth must be"),
        (
            {"latency": 0.0, "bandwidth": 1.0, "topology": "tree"},
            "topology must be one of serial, parallel, switch, ring",
        ),
    ],
)
def test_network_model_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NetworkModel(**kwargs)


def test_network_model_rejects_bad_byte_counts():
    model = NetworkModel(0.0, 1.0)
    for bad in (np.array([]), np.array([1, -2]), np.zeros((2, 2))):
        with pytest.raises(ValueError, match="up_bytes must be"):
            model.uplink_seconds(bad)
    with pytest.raises(ValueError, match="down_bytes must be"):
        model.downlink_seconds(-1)


# --- launcher checks and transport choice ----------------------------------------------------


def test_launcher_size_reads_the_launchers_variables():
    assert launcher_size({}) is None
    assert launcher_size({"PMI_SIZE": "4"}) == ("PMI_SIZE", 4)
    assert launcher_size({"OMPI_COMM_WORLD_SIZE": "2", "SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "0"}) == (
        "OMPI_COMM_WORLD_SIZE",
        2,
    )
    assert launcher_size({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "3"}) == ("SLURM_STEP_NUM_TASKS", 8)
    assert launcher_size({"SLURM_STEP_NUM_TASKS": "8"}) is None
    assert launcher_size({"PMI_SIZE": ""}) is None


def test_check_launcher_size_explains_a_mismatch():
    check_launcher_size(4, {"PMI_SIZE": "4"})
    check_launcher_size(1, {})
    with pytest.raises(
        RuntimeError, match=r"started 4 processes \(OMPI_COMM_WORLD_SIZE=4\) but MPI sees 1: mpi4py uses"
    ):
        check_launcher_size(1, {"OMPI_COMM_WORLD_SIZE": "4"})
    slurm = {"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "3"}
    with pytest.raises(
        RuntimeError, match=r"srun's PMI plugin does not match .*: add --mpi=pmi2 .* or --mpi=pmix"
    ) as err:
        check_launcher_size(1, slurm)
    assert "\n" not in str(err.value)


def test_unknown_wait_mode_is_refused():
    with pytest.raises(ValueError, match="wait must be one of auto, sleep, busy"):
        MPITransport(2, wait="spin")


def test_make_transport_in_one_process(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    transport = make_transport(3)
    assert isinstance(transport, LocalTransport) and transport.n_workers == 3
    monkeypatch.setenv("PMI_SIZE", "4")
    with pytest.raises(RuntimeError, match="PMI_SIZE=4"):
        make_transport(3)
    with pytest.raises(RuntimeError, match="PMI_SIZE=4"):
        MPITransport(3)


def test_mpi_transport_with_one_rank_counts_like_local(monkeypatch):
    monkeypatch.delenv("PMI_SIZE", raising=False)
    n_workers = 5
    transport = MPITransport(n_workers)
    assert transport.size == 1 and transport.local_workers == range(n_workers)
    counted = []
    for rnd in range(ROUNDS):
        uploads = [traffic(SEED, rnd, w) for w in range(n_workers)]
        assert [bytes(g) for g in transport.gather(uploads)] == uploads
        assert bytes(transport.broadcast(traffic(SEED, rnd, DOWNLINK))) == traffic(SEED, rnd, DOWNLINK)
        counted.append(transport.counter.end_round().to_dict())
    assert counted == run_local(n_workers)
    assert transport.agree(5) == 5 and transport.all_equal(b"d")


# --- MPI runs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mpiexec() -> Path:
    path = Path(sys.executable).parent / "mpiexec"
    if not path.exists():
        pytest.fail(
            f"mpiexec not found next to {sys.executable}: the MPI tests need it. Install the test extra, "
            "which brings the mpich wheel: pip install -e '.[test]'"
        )
    return path


def reference_counts(n_workers: int, rounds: int = ROUNDS, seed: int = SEED) -> list[dict]:
    """Counts from first principles: full-decoder split of every upload and downlink, plus size prefixes."""
    expected = []
    for rnd in range(rounds):
        uploads = [traffic(seed, rnd, w) for w in range(n_workers)]
        down = traffic(seed, rnd, DOWNLINK)
        up_split = [payload_and_header(u) for u in uploads]
        down_payload, down_header = payload_and_header(down)
        expected.append(
            {
                "up_payload": sum(p for p, _ in up_split),
                "up_header": sum(h for _, h in up_split),
                "up_control": SIZE_PREFIX_BYTES * n_workers,
                "down_payload": down_payload,
                "down_header": down_header,
                "down_control": SIZE_PREFIX_BYTES,
                "switch_packets": 0,
                "overflow_packets": 0,
                "fallback_bytes": 0,
                "up_bytes": [len(u) + SIZE_PREFIX_BYTES for u in uploads],
                "uploads": [int(len(u) > 0) for u in uploads],
                "skips": [int(len(u) == 0) for u in uploads],
                "complete": True,
            }
        )
    return expected


@pytest.mark.mpi
@pytest.mark.parametrize(
    ("ranks", "n_workers", "wait"), [(1, 5, "auto"), (2, 5, "busy"), (4, 5, "sleep"), (4, 3, "busy"), (4, 3, "auto")]
)
def test_mpi_round_trip_and_counts(mpiexec, ranks, n_workers, wait):
    """Every upload and downlink arrives intact (received into buffers the transport reuses from
    round to round), counted exactly, whichever way the ranks wait."""
    command = [str(mpiexec), "-n", str(ranks), sys.executable, "-m", "mpi4py", str(SCRIPTS / "roundtrip.py")]
    arguments = [str(n_workers), str(ROUNDS), str(SEED), wait]
    done = subprocess.run([*command, *arguments], check=False, capture_output=True, text=True, timeout=300, cwd=SCRIPTS)
    assert done.returncode == 0, f"mpiexec failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert result["size"] == ranks
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = int(os.environ.get("NUMBA_NUM_THREADS", max(1, min(numba.config.NUMBA_NUM_THREADS, cores // ranks))))
    polite = wait == "sleep" or (wait == "auto" and ranks > cores)
    assert result["layout"].startswith(f"{layout_summary(n_workers, ranks)}; {ranks} rank")
    assert result["layout"].endswith(
        f": {threads} kernel thread{'s' if threads != 1 else ''} per rank, {'sleeping' if polite else 'busy'} waits"
    )
    assert result["rounds"] == run_local(n_workers) == reference_counts(n_workers)
    all_empty = result["rounds"][ALL_EMPTY_ROUND]
    assert all_empty["up_payload"] == all_empty["up_header"] == sum(all_empty["uploads"]) == 0
    assert result["rounds"][EMPTY_DOWNLINK_ROUND]["down_payload"] == 0
    assert ("host no worker" in done.stderr) == (n_workers < ranks)


@pytest.mark.mpi
@pytest.mark.parametrize(("ranks", "n_workers"), [(2, 7), (3, 4)])
def test_mpi_gather_of_message_rows(mpiexec, ranks, n_workers):
    """encode_many's message rows gathered with the size announced come back to the master as rows,
    with the bytes, byte counts and decode_sum bits of the same messages gathered as a list."""
    command = [str(mpiexec), "-n", str(ranks), sys.executable, "-m", "mpi4py", str(SCRIPTS / "blocks.py")]
    done = subprocess.run(
        [*command, str(n_workers)], check=False, capture_output=True, text=True, timeout=300, cwd=SCRIPTS
    )
    assert done.returncode == 0, f"mpiexec failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert done.stdout.split() == ["OK"], done.stdout


# --- switch capabilities: every transport through integer_sum and max_agree -------------------


FRAME = 14 + 20 + 8 + 12 + 4  # Ethernet, IPv4, UDP, the packet header, FCS
ATP_FRAME, ATP_PAYLOAD = 34 + 26 + 4, 62 * 4


def switch_reference(n_workers: int) -> list[dict]:
    """Counts from the frame formats: per operation and worker, the values plus the frame's header bytes
    per packet; then ATP's flagged sum (3 padded packets) and fallback (1 or 2 flagged packets)."""
    expected = []
    for length, width, packet_values in CASES:
        packets = -(-length // packet_values)
        payload, header = 2 * length * width // 8, 2 * FRAME * packets  # integer_sum + max_agree
        expected.append(counts(n_workers, payload, header, payload, header, 2 * packets, uploads=2))
    fallback_packets = 2 if n_workers > 1 else 1
    fallback = (ATP_PAYLOAD + ATP_FRAME) * fallback_packets
    payload = ATP_PAYLOAD * (3 + fallback_packets)
    header = ATP_FRAME * (3 + fallback_packets)
    atp = counts(n_workers, payload, header, payload, header, 3 + fallback_packets, uploads=1)
    atp.update(overflow_packets=fallback_packets, fallback_bytes=(n_workers + 1) * fallback)
    expected.append(atp)
    return expected


def counts(n_workers: int, payload: int, header: int, down_payload: int, down_header: int, packets: int, uploads: int):
    return {
        "up_payload": n_workers * payload,
        "up_header": n_workers * header,
        "up_control": 0,
        "down_payload": down_payload,
        "down_header": down_header,
        "down_control": 0,
        "switch_packets": packets,
        "overflow_packets": 0,
        "fallback_bytes": 0,
        "up_bytes": [payload + header] * n_workers,
        "uploads": [uploads] * n_workers,
        "skips": [0] * n_workers,
        "complete": True,
    }


@pytest.mark.parametrize("n_workers", [1, 3, 5])
def test_local_switch_capabilities(n_workers):
    assert exercise(LocalTransport(n_workers)) == switch_reference(n_workers)


@pytest.mark.mpi
@pytest.mark.parametrize(("ranks", "n_workers"), [(1, 5), (2, 5), (4, 5), (4, 3)])
def test_mpi_switch_capabilities(mpiexec, ranks, n_workers):
    command = [str(mpiexec), "-n", str(ranks), sys.executable, "-m", "mpi4py", str(SCRIPTS / "capabilities.py")]
    done = subprocess.run(
        [*command, str(n_workers)], check=False, capture_output=True, text=True, timeout=300, cwd=SCRIPTS
    )
    assert done.returncode == 0, f"mpiexec failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result == {"size": ranks, "rounds": switch_reference(n_workers)}


def test_node_share_counts_the_cores_the_node_ranks_may_use(monkeypatch):
    """The node's cores are the union of its ranks' CPU affinities, or the CPU count where the OS
    reports no affinity (macOS); ``wait = "auto"`` sleeps when the ranks outnumber them."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(), raising=False)
    assert node_share(MPI.COMM_SELF) == (1, 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5}, raising=False)
    assert node_share(MPI.COMM_SELF) == (1, 2)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert node_share(MPI.COMM_SELF) == (1, 1)


def test_each_rank_gets_its_share_of_the_kernel_threads(monkeypatch):
    """``cores // ranks`` threads per rank (at least 1, at most numba's pool), unless the user set
    NUMBA_NUM_THREADS."""
    before = numba.get_num_threads()
    pool = numba.config.NUMBA_NUM_THREADS
    try:
        monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
        assert share_kernel_threads(4, 2) == 1
        assert share_kernel_threads(1, pool) == pool
        assert share_kernel_threads(2, 2 * pool) == pool
        numba.set_num_threads(pool)
        monkeypatch.setenv("NUMBA_NUM_THREADS", str(pool))
        assert share_kernel_threads(4, 2) == pool
    finally:
        numba.set_num_threads(before)


def test_joined_uploads_are_a_view_when_back_to_back():
    """A rank's uploads go to Gatherv as one array: a view of encode_many's batch buffer (no copy),
    a copy when they do not lie back to back; skipped (empty) uploads add nothing."""
    codec = make("natural")
    batch = codec.encode_many(
        np.random.default_rng(0).standard_normal((4, 100)), [RandomKey(0, 0, w) for w in range(4)]
    )
    together = joined([batch[0], memoryview(b""), batch[1], batch[2]])
    assert bytes(together) == b"".join([batch[0], batch[1], batch[2]])
    assert np.shares_memory(together, np.frombuffer(batch[1], dtype=np.uint8))
    apart = joined([batch[0], batch[2]])
    assert bytes(apart) == bytes(batch[0]) + bytes(batch[2])
    assert not np.shares_memory(apart, np.frombuffer(batch[0], dtype=np.uint8))
    assert joined([memoryview(b"")]).size == 0

"""Ctrl-C and kill under MPI: end every rank within seconds and record why in the results file.

A Python signal handler runs only when the main thread returns to the interpreter, which a rank
waiting inside an MPI collective does not do, so a Ctrl-C could hang the job with every rank alive.
:class:`SignalWatch` replaces the handlers of SIGINT, SIGTERM and SIGHUP by no-ops and points
Python's wakeup file descriptor at a pipe: the interpreter's C-level handler writes each signal's
number to it at once, whichever thread is running, and a thread of the watch reads it:

* on rank 0, it records ``failed`` with "interrupted (SIGINT)" or "terminated by SIGTERM (time
  limit or scancel?)" in the results file and calls ``MPI_Abort`` on the world communicator, which
  ends every rank;
* on another rank, it sends the reason to rank 0 on a control communicator of its own (rank 0
  polls it every :data:`POLL_SECONDS`), so rank 0 records "rank r: terminated by SIGTERM" and
  aborts; if rank 0 does not within :data:`GRACE_SECONDS`, the rank aborts the job itself.

With checkpoints on (:meth:`SignalWatch.enable_checkpoints`), the first SIGTERM or SIGUSR1 (Slurm's
``--signal=B:USR1@120`` before the time limit) is a request instead: rank 0's run loop writes a
checkpoint after the current round and every rank ends cleanly, the results file saying
``resumable``; if that has not happened within :data:`CHECKPOINT_GRACE_SECONDS`, or on a second
signal, the job ends as above.

Single-process runs keep Python's handlers (SIGINT raises KeyboardInterrupt, the CLI turns SIGTERM
into SystemExit), which the results writer records the same way. The watch calls MPI from its
threads, so it needs ``MPI_THREAD_MULTIPLE`` (mpi4py's default request; the CLI falls back to
Python's handlers, with a warning, where the MPI library gives less). :meth:`SignalWatch.report`
also carries an error that only one rank sees to rank 0, so that it is recorded too, and
:meth:`SignalWatch.all_failed` tells a failing rank whether every rank failed alike (then all may
exit normally) or whether some rank is still working or waiting (then the job must be aborted).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from mpi4py import MPI

WATCHED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
CHECKPOINT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # with checkpoints on: checkpoint, then end as resumable
POLL_SECONDS = 0.2
GRACE_SECONDS = 10.0
AGREE_SECONDS = 3.0  # how long a failing rank waits for the others to fail alike before aborting the job
REPEAT_SECONDS = 5.0  # a checkpoint signal repeated sooner counts once (scancel signals srun and the tasks)
CHECKPOINT_GRACE_SECONDS = 25.0  # after a checkpoint request, rank 0 records failed and aborts if the run is not over
CONTROL_TAG = 7
STOP_BYTE = b"\0"  # written by close(); signal numbers are never 0


def signal_reason(signum: int) -> str:
    """What the run's failure message says for signal ``signum``."""
    if signum == signal.SIGINT:
        return "interrupted (SIGINT)"
    if signum == signal.SIGTERM:
        return "terminated by SIGTERM (time limit or scancel?)"
    return f"terminated by {signal.Signals(signum).name}"


def _ignore(signum: int, frame: object) -> None:
    """The Python-level handler: nothing (the watch thread acts on the wakeup byte)."""


class SignalWatch:
    """Watches for SIGINT/SIGTERM/SIGHUP on every rank of ``comm`` (see the module docstring).

    Created in the main thread. Rank 0 calls :meth:`attach` with the function that records a failure
    (the results writer's); :meth:`close` restores the handlers. Collective: every rank creates and
    closes it.
    """

    def __init__(self, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
        if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
            raise RuntimeError(
                "SignalWatch needs MPI_THREAD_MULTIPLE (MPI calls from its threads); this MPI gives level "
                f"{MPI.Query_thread()} (check MPI4PY_RC_THREAD_LEVEL)"
            )
        self.rank = comm.Get_rank()
        self.control = comm.Dup()
        self.failures = comm.Dup()  # only failing ranks enter its barrier (all_failed)
        self.record: Callable[[str], None] | None = None
        self.checkpoint_request: threading.Event | None = None
        self.fallback: threading.Timer | None = None
        self.forwarded: MPI.Request | None = None  # a checkpoint request sent to rank 0
        self.requested_at = 0.0
        self.decided = False  # enable_checkpoints or checkpoints_off was called
        self.decision = threading.Lock()  # orders that call and a signal arriving meanwhile
        self.early: int | None = None  # a checkpoint signal that came before that decision (start-up)
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)
        self.previous_handlers = {signum: signal.signal(signum, _ignore) for signum in WATCHED}
        self.previous_wakeup = signal.set_wakeup_fd(self.write_end, warn_on_full_buffer=False)
        self.waiter = threading.Thread(target=self._wait_for_signal, name="mpicomp-signals", daemon=True)
        self.waiter.start()
        self.listener = None
        if self.rank == 0:
            self.listener = threading.Thread(target=self._listen, name="mpicomp-control", daemon=True)
            self.listener.start()

    def attach(self, record: Callable[[str], None]) -> None:
        """On rank 0: ``record(message)`` writes the failure (called once, from the watcher threads)."""
        self.record = record

    def enable_checkpoints(self, request: threading.Event) -> None:
        """Every rank: the first SIGTERM or SIGUSR1 asks for a checkpoint instead of ending the job. On
        rank 0 ``request`` is set (the run loop checkpoints after the current round and ends as
        ``resumable``); another rank forwards the request to rank 0. A second signal, or a run not over
        within :data:`CHECKPOINT_GRACE_SECONDS`, ends the job as before."""
        with self.decision:
            self.checkpoint_request, self.decided = request, True
        if self.early is not None:
            self._request_checkpoint(request, self.early)

    def checkpoints_off(self) -> None:
        """The run writes no checkpoints: a SIGTERM or SIGUSR1 that came during start-up ends the job now."""
        with self.decision:
            self.decided = True
        if self.early is not None:
            self._end(self.early)

    def _wait_for_signal(self) -> None:
        while True:
            byte = os.read(self.read_end, 1)
            if byte in (STOP_BYTE, b""):
                return
            if byte[0] not in WATCHED:  # other signals with Python handlers also write their number
                continue
            with self.decision:
                early = byte[0] in CHECKPOINT_SIGNALS and not self.decided
                if early and self.early is None:
                    self.early = byte[0]  # start-up: acted on once the run says whether it checkpoints
            if early:
                continue
            request = self.checkpoint_request
            if byte[0] in CHECKPOINT_SIGNALS and request is not None and request.is_set():
                if time.monotonic() - self.requested_at < REPEAT_SECONDS:
                    continue  # the same signal again (a launcher forwarding what the rank already got)
                break
            if byte[0] not in CHECKPOINT_SIGNALS or request is None:
                break
            self._request_checkpoint(request, byte[0])
        self._end(byte[0])

    def _request_checkpoint(self, request: threading.Event, signum: int) -> None:
        """Rank 0 sets ``request`` (the run loop reads it), another rank forwards it to rank 0."""
        request.set()
        self.requested_at = time.monotonic()
        if self.rank == 0:
            self._checkpoint_requested(signal_reason(signum))
        else:
            self.forwarded = self.control.isend(("checkpoint", signal_reason(signum)), dest=0, tag=CONTROL_TAG)

    def _end(self, signum: int) -> None:
        """End the job for signal ``signum``: rank 0 records it and aborts, another rank tells rank 0."""
        if self.rank == 0:
            self._fail(signal_reason(signum), 128 + signum)
        else:
            self.report(signal_reason(signum), 128 + signum)

    def all_failed(self, seconds: float = AGREE_SECONDS) -> bool:
        """Called by a rank after its own error: ``True`` if every rank has called it within ``seconds``.

        Errors that every rank meets alike (an invalid option, a diverging aggregate) then end the job
        normally, with one message from rank 0. ``False`` means some rank is still working or waits
        in a collective (an error on one node only), and the caller must take the job down."""
        request = self.failures.Ibarrier()
        deadline = time.monotonic() + seconds
        while not request.Test():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def report(self, reason: str, code: int = 1) -> None:
        """On a rank other than 0: send ``reason`` to rank 0, which records "rank r: reason" and aborts the job; if it
        has not within :data:`GRACE_SECONDS`, abort here. Used for signals and for errors that only
        this rank sees (another rank then waits in a collective and would die unrecorded)."""
        request = self.control.isend(f"{reason}", dest=0, tag=CONTROL_TAG)
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline:
            request.Test()
            time.sleep(POLL_SECONDS)
        MPI.COMM_WORLD.Abort(code)

    def _listen(self) -> None:
        """Rank 0: wait (polling, so as not to spin a core) for another rank's signal, or for close()."""
        request = self.control.irecv(source=MPI.ANY_SOURCE, tag=CONTROL_TAG)
        status = MPI.Status()
        while True:
            done, reason = request.test(status)
            if not done:
                time.sleep(POLL_SECONDS)
                continue
            if isinstance(reason, tuple):  # ("checkpoint", reason): another rank asks for a checkpoint
                if self.checkpoint_request is not None and not self.checkpoint_request.is_set():
                    self.checkpoint_request.set()
                    self._checkpoint_requested(f"rank {status.Get_source()}: {reason[1]}")
                request = self.control.irecv(source=MPI.ANY_SOURCE, tag=CONTROL_TAG)
                continue
            if reason is not None:  # None: close() on rank 0 ends the wait
                self._fail(f"rank {status.Get_source()}: {reason}", 1)
            return

    def _checkpoint_requested(self, reason: str) -> None:
        """Rank 0: the run loop now checkpoints and ends; if it is not over in time, fail as before."""
        message = f"{reason}; no checkpoint within {CHECKPOINT_GRACE_SECONDS:g} s"
        self.fallback = threading.Timer(CHECKPOINT_GRACE_SECONDS, self._fail, (message, 1))
        self.fallback.daemon = True
        self.fallback.start()

    def _fail(self, reason: str, code: int) -> None:
        """Record ``reason`` (rank 0, once the writer is attached), then end every rank."""
        with self.lock:
            if self.closing.is_set():
                return
            try:
                if self.record is not None:
                    self.record(reason)
            finally:
                MPI.COMM_WORLD.Abort(code)

    def close(self) -> None:
        """Stop watching (the run ended without a signal); every rank calls it. Idempotent."""
        with self.lock:
            if self.closing.is_set():
                return
            self.closing.set()
        if self.fallback is not None:
            self.fallback.cancel()
        os.write(self.write_end, STOP_BYTE)
        self.waiter.join()
        if self.listener is not None:
            self.control.isend(None, dest=0, tag=CONTROL_TAG).wait()
            self.listener.join()
        signal.set_wakeup_fd(self.previous_wakeup)
        for signum, handler in self.previous_handlers.items():
            signal.signal(signum, handler)
        os.close(self.read_end)
        os.close(self.write_end)
        self.control.Free()
        self.failures.Free()

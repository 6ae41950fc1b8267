"""The sender's use of the disk spool: write what would be lost, replay it when possible.

:class:`Spooler` wraps one :class:`~._spool.Spool` for one destination (the ingest URL):

* :meth:`Spooler.write` keeps a batch body the sender would otherwise drop (retries ran out,
  the server was down while the queue filled, shutdown cut delivery short), in a worker
  thread so the event loop never waits on the disk (at interpreter exit, where no thread
  can start, in the calling thread);
* :meth:`Spooler.replay` sends spooled batches, oldest first, through the sender's own
  ``post``; a batch is deleted once the server answered 2xx (or refused it for good), and
  left for later on 429, 5xx and network errors. Replayed events may have been recorded by
  another process, so they are counted apart (``replayed``), not in ``sent``.

No method raises; a spool that fails is logged once and the batch counts as lost as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread

from ._internal import warn_once
from ._spool import Spool

Post = Callable[[bytes], Awaitable[tuple[int, bytes | None, str | None]]]


class Spooler:
    """See the module docstring. One per engine; the spool itself is shared per process."""

    def __init__(self, spool: Spool, destination: str) -> None:
        self.spool = spool
        self.destination = destination
        self.replayed = 0
        self.replay_rejected = 0

    def write_now(self, body: bytes, events: int) -> bool:
        """Spool a batch in this thread (blocks on the disk). True once it is on disk."""
        try:
            return self.spool.write(body, self.destination, events)
        except Exception as exc:
            warn_once(
                "spool-write",
                "hiveloop_async: cannot write to the spool (%s); batches are lost",
                type(exc).__name__,
            )
            return False

    async def write(self, body: bytes, events: int) -> bool:
        """Spool a batch from a worker thread (the loop goes on). True once on disk."""
        try:
            return await anyio.to_thread.run_sync(self.write_now, body, events)
        except RuntimeError:  # no thread at interpreter exit: write here
            return self.write_now(body, events)

    def pending(self) -> bool:
        """True when batches for this destination wait in the spool."""
        try:
            return self.spool.pending_batches() > 0
        except Exception:
            return False

    async def replay(
        self,
        post: Post,
        delivered_events: Callable[[int], None],
        more: Callable[[], bool] = lambda: True,
    ) -> bool:
        """Send spooled batches in order until none is left, one fails, or ``more()`` is
        false before the next one (a shutdown: the batch in flight is finished, no new one
        is claimed).

        ``delivered_events(n)`` is called after each batch the server accepted. Returns True
        when the spool was emptied for this destination. Cancellation passes through (a
        claimed batch is released first).
        """
        spool = self.spool
        while more():
            try:
                batch = await anyio.to_thread.run_sync(spool.claim_next, self.destination)
            except Exception:
                return False
            if batch is None:
                return True
            delivered = False
            try:
                status, _, _ = await post(batch.body)
                if 200 <= status < 300:
                    delivered = True
                    self.replayed += batch.events
                    delivered_events(batch.events)
                elif 400 <= status < 500 and status not in (401, 403, 408, 429):
                    delivered = True  # refused for good: keeping it would block the rest
                    self.replay_rejected += batch.events
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        if delivered:
                            await anyio.to_thread.run_sync(spool.confirm, batch)
                        else:
                            await anyio.to_thread.run_sync(spool.release, batch)
                    except Exception:
                        pass
            if not delivered:
                return False
        return False

"""Checking secrets against Argon2id hashes in a pool of their own, bounded, so that hashing never
starves the threads that serve API calls.

An Argon2id verification costs about a second of CPU and 64 MiB. The token endpoint is reachable
without authentication, so every verification runs here: at most ``workers`` at a time, at most
``queue`` more waiting, and a request beyond that is refused at once (``HashingBusy``) instead of
waiting in a queue that a flood could make endless.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from bulwark.auth.secrets import hash_password, verify_password


class HashingBusy(Exception):
    """Every hashing slot is taken: the request is refused rather than queued."""


@functools.cache
def dummy_hash() -> str:
    """A hash of a random secret nobody knows, made with today's parameters.

    Compared against when a client or user does not exist, so that an unknown name costs exactly
    what a known one costs and timing does not tell which exists. Made on first use, not at
    import, so that commands that never verify do not pay for it.
    """
    return hash_password(secrets.token_urlsafe(16))


class SecretVerifier:
    """Verifies secrets against stored hashes on a small pool of its own with a bounded queue."""

    def __init__(self, workers: int = 2, queue: int = 8) -> None:
        if workers < 1 or queue < 0:
            raise ValueError("need at least one hashing worker and a queue of zero or more")
        self.workers = workers
        self.queue = queue
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulwark-hashing")
        self._slots = threading.BoundedSemaphore(workers + queue)

    async def verify(self, secret: str, secret_hash: str | None) -> bool:
        """Whether ``secret`` matches ``secret_hash``; with no hash, a dummy one is checked and False returned.

        Raises ``HashingBusy`` at once when ``workers`` verifications run and ``queue`` more wait.
        """
        if not self._slots.acquire(blocking=False):
            raise HashingBusy
        try:
            future: Future[bool] = self._pool.submit(verify_password, secret, secret_hash or dummy_hash())
        except BaseException:
            self._slots.release()
            raise
        # The slot is freed when the work ends, even if the waiting request was abandoned.
        future.add_done_callback(lambda _: self._slots.release())
        matched = await asyncio.wrap_future(future)
        return matched and secret_hash is not None

    def warm_up(self) -> None:
        """Make the dummy hash now, so that the first unknown name costs no more than later ones."""
        dummy_hash()

    def close(self) -> None:
        """Stop the pool; queued verifications are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)

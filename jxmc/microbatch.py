"""Micro-batching of prediction requests: one worker thread gathers the requests
that arrive within a bounded wait into one call of
:meth:`jxmc.predictor.Predictor.topk`, padded to a power-of-two batch (``jxmc serve``).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from jxmc.errors import ConfigError, JxmcError
from jxmc.types import TopK

if TYPE_CHECKING:  # pragma: no cover
    from jxmc.predictor import Predictor

class RequestError(Exception):
    """A request the service refuses: ``status`` (4xx/5xx) and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bucket(n: int) -> int:
    """The power of two ``>= n`` (``n >= 1``): the padded size of a batch of ``n`` points."""
    return 1 << max(0, n - 1).bit_length()


@dataclass
class _Job:
    X: sp.csr_matrix
    texts: list[str] | None
    k: int
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: Exception | None = None


class Batcher:
    """Gathers requests into one call of :meth:`Predictor.topk` (one worker thread).

    Args:
      predictor: the model; max_batch: most points per call (a power of two);
      max_wait_ms: how long the first request of a batch waits for others;
      max_k: the ``k`` of every call (requests take their first ``k <= max_k``).
    """

    def __init__(self, predictor: Predictor, *, max_batch: int = 32, max_wait_ms: float = 2.0,
                 max_k: int = 100):
        if max_batch < 1 or bucket(max_batch) != max_batch:
            raise ConfigError(f"--max-batch must be a power of two >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms must be >= 0, got {max_wait_ms}")
        if max_k < 1:
            raise ConfigError(f"--max-k must be >= 1, got {max_k}")
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_k = max_k
        self.calls = 0  # calls of Predictor.topk made (warm-up included)
        self.batches = 0  # gathered batches of requests predicted (warm-up not included)
        self.requests = 0  # requests answered in them
        self.points = 0  # their points (before padding)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._carry: _Job | None = None
        self._thread = threading.Thread(target=self._run, name="jxmc-batcher", daemon=True)
        self._thread.start()

    def submit(self, X: sp.csr_matrix, texts: list[str] | None, k: int, timeout: float = 300.0):
        """The :class:`jxmc.predictor.Prediction` of one request's rows (blocks until done).

        Raises:
          RequestError: 503 when the answer does not come within ``timeout`` seconds;
            500 when the prediction failed.
        """
        job = _Job(X, texts, k)
        self._queue.put(job)
        if not job.done.wait(timeout):
            raise RequestError(503, f"no answer within {timeout:.0f} s (the service is overloaded)")
        if job.error is not None:
            if isinstance(job.error, JxmcError):
                raise RequestError(400, str(job.error))
            raise RequestError(500, f"prediction failed: {type(job.error).__name__}: {job.error}")
        return job.result

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _gather(self, first: _Job) -> list[_Job]:
        jobs, n = [first], first.X.shape[0]
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            if n + job.X.shape[0] > self.max_batch:
                self._carry = job  # first of the next batch
                break
            jobs.append(job)
            n += job.X.shape[0]
        return jobs

    def _run(self) -> None:
        while True:
            first, self._carry = (self._carry, None) if self._carry is not None else (self._queue.get(), None)
            if first is None:
                return
            jobs = self._gather(first)
            try:
                self._predict(jobs)
            except Exception as e:  # noqa: BLE001  (the worker must survive any failure)
                for job in jobs:
                    job.error = e
            for job in jobs:
                job.done.set()

    def run_padded(self, X: sp.csr_matrix, texts: list[str] | None):
        """:meth:`Predictor.topk` at ``k = max_k`` of ``X`` in chunks of ``max_batch``, each
        padded to its power-of-two bucket by repeating its last row; numpy ``(ids, scores)``."""
        n = X.shape[0]
        ids, scores = [], []
        for start in range(0, n, self.max_batch):
            stop = min(n, start + self.max_batch)
            m = stop - start
            pad = bucket(m) - m
            rows = np.concatenate([np.arange(start, stop), np.full(pad, stop - 1)])
            Xc = X[rows]
            tc = None if texts is None else [texts[i] for i in rows]
            out = self.predictor.topk(Xc, tc, k=self.max_k)
            self.calls += 1
            ids.append(np.asarray(out.ids)[:m])
            scores.append(np.asarray(out.scores)[:m])
        return np.concatenate(ids), np.concatenate(scores)

    def _predict(self, jobs: list[_Job]) -> None:
        X = sp.vstack([job.X for job in jobs], format="csr", dtype=np.float32)
        texts = None
        if self.predictor.needs_texts:
            texts = [t for job in jobs for t in job.texts]
        ids, scores = self.run_padded(X, texts)
        self.batches += 1
        self.requests += len(jobs)
        self.points += X.shape[0]
        start = 0
        for job in jobs:
            stop = start + job.X.shape[0]
            job.result = self.predictor.result(TopK(ids[start:stop, :job.k], scores[start:stop, :job.k]))
            start = stop

"""``jxmc serve``: a model behind an HTTP JSON service, with micro-batching.

The server is the standard library's :class:`http.server.ThreadingHTTPServer`
(one thread per connection; HTTP/1.1 keep-alive). Requests::

    POST /predict   {"texts": ["a document", ...], "k": 5}          raw-text models
                    {"features": ["3:0.5 17:1.0", ...], "k": 5}     any model reading features
        200 -> {"predictions": [[{"label": "tag::x", "id": 12, "score": 0.93}, ...], ...]}
               one list per input, in input order, best first; with "probability" in each
               item when the model is calibrated (jxmc calibrate)
    GET /health
        200 -> {"status": "ready", ...} once warm-up is done; 503 {"status": "warming up"} before

``k`` defaults to 10 (or ``--max-k`` if smaller) and must be in ``[1, --max-k]``.
Feature rows are read as a line of an XC features file (0-based ``id:value``
pairs) and L2-normalised as ``jxmc predict`` does, so the answers are those of
``jxmc predict`` (both go through :class:`jxmc.predictor.Predictor`).

Errors: a bad request gets a 4xx and one line of JSON ``{"error": "..."}``:
400 malformed JSON / wrong keys or types / a feature id outside ``[0, d)`` /
``k`` out of range; 404 unknown path; 405 wrong verb; 411 no Content-Length;
413 a body over ``max_body`` bytes (default 1 MiB); 503 before warm-up. A client
that disconnects mid-request costs its own connection only.

Micro-batching: the handler threads parse and featurise their request, then put
it on a queue; one worker thread takes the requests that arrive within
``max_wait_ms`` of the first (up to ``max_batch`` points), stacks them, pads the
stack to a power-of-two bucket (by repeating its last point, so no new row
length appears) and makes one jitted call at ``k = max_k`` for all of them, then
hands each request its rows cut to its ``k``. Warm-up compiles that call for
every bucket ``1, 2, 4, ..., max_batch`` (and, for sparse rows, row lengths
``8 .. warm_nnz``) before ``/health`` says ready.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import scipy.sparse as sp

from jxmc.errors import ConfigError, JxmcError
from jxmc.microbatch import Batcher, RequestError, bucket
from jxmc.predictor import Predictor

MAX_BODY = 1 << 20  # bytes of one request body (413 beyond)
DEFAULT_K = 10


class Service:
    """The HTTP service of one :class:`Predictor` (see the module docstring).

    ``start()`` binds ``host:port`` (port 0: a free one, see :attr:`port`), starts
    serving (``/health`` answers 503 until ready), warms up, then is ready;
    ``shutdown()`` stops it.
    """

    def __init__(self, predictor: Predictor, *, host: str = "127.0.0.1", port: int = 8000,
                 max_batch: int = 32, max_wait_ms: float = 2.0, max_k: int = 100,
                 max_body: int = MAX_BODY, warm_nnz: int = 64):
        self.predictor = predictor
        self.batcher = Batcher(predictor, max_batch=max_batch, max_wait_ms=max_wait_ms, max_k=max_k)
        self.max_body = max_body
        self.warm_nnz = warm_nnz
        self.ready = False
        self.warmup_seconds = None
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.httpd.server_address[0]

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def listen(self) -> Service:
        """Starts answering HTTP (``/health`` says 503 and ``/predict`` refuses until ready)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.httpd.serve_forever, name="jxmc-http",
                                            daemon=True)
            self._thread.start()
        return self

    def start(self, warm: bool = True) -> Service:
        """:meth:`listen`, then :meth:`warm_up` (unless ``warm`` is False), then ready."""
        self.listen()
        if warm:
            self.warm_up()
        self.ready = True
        return self

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.batcher.close()

    def warm_up(self) -> None:
        """Compiles the batched call for every bucket ``1 .. max_batch`` on dummy points
        (sparse rows of ``z - 1`` non-zeros for ``z = 8, 16, .., warm_nnz``, so that with
        the bias feature they fill each padded row length; texts: a dummy document)."""
        t0 = time.perf_counter()
        p, b = self.predictor, self.batcher
        d = p.n_features
        sizes = [1 << i for i in range(int(math.log2(b.max_batch)) + 1)]
        widths = [z for z in (1 << i for i in range(3, 31)) if z <= max(8, self.warm_nnz)]
        for n in sizes:
            if p.needs_texts:
                texts = ["warm up"] * n
                b.run_padded(p.featurise(texts) if p.reads_texts else sp.csr_matrix((n, d), dtype=np.float32),
                             texts)
                continue
            for z in widths:
                nnz = min(max(z - 1, 1), d)
                cols = np.tile(np.arange(nnz), n)
                X = sp.csr_matrix((np.full(n * nnz, 1.0 / math.sqrt(nnz), np.float32), cols,
                                   np.arange(0, n * nnz + 1, nnz)), shape=(n, d))
                b.run_padded(X, None)
                if nnz < z - 1:
                    break  # d is smaller: wider rows cannot occur
        self.warmup_seconds = time.perf_counter() - t0

    # -- one request ------------------------------------------------------------------------

    def answer(self, body: bytes) -> dict:
        """The JSON answer of a ``POST /predict`` body.

        Raises:
          RequestError: 400 for a body the service cannot read (see the module docstring).
        """
        try:
            req = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(400, f"malformed JSON: {e}") from None
        if not isinstance(req, dict):
            raise RequestError(400, "expected a JSON object {\"texts\": [...]} or {\"features\": [...]}")
        unknown = sorted(set(req) - {"texts", "features", "k"})
        if unknown:
            raise RequestError(400, f"unknown key(s) {', '.join(map(repr, unknown))}; "
                                    f"expected 'texts' or 'features', and 'k'")
        if ("texts" in req) == ("features" in req):
            raise RequestError(400, "give exactly one of 'texts' (raw-text models) or 'features'")
        max_k = self.batcher.max_k
        k = req.get("k", min(DEFAULT_K, max_k))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
            raise RequestError(400, f"'k' must be an integer in [1, {max_k}], got {k!r}")
        key = "texts" if "texts" in req else "features"
        items = req[key]
        if not isinstance(items, list) or not items:
            raise RequestError(400, f"'{key}' must be a non-empty list of strings")
        p = self.predictor
        try:
            if key == "texts":
                X, texts = p.featurise(items), items
            else:
                if p.needs_texts:
                    raise RequestError(400, f"this model ({p.method.name}) reads raw texts; send 'texts'")
                X, texts = p.features(items), None
        except JxmcError as e:
            raise RequestError(400, str(e)) from None
        out = self.batcher.submit(X, texts, k)
        return {"predictions": out.rows()}

    def health(self) -> tuple[int, dict]:
        if not self.ready:
            return 503, {"status": "warming up"}
        p, b = self.predictor, self.batcher
        return 200, {"status": "ready", "method": p.method.name, "n_features": p.n_features,
                     "n_labels": p.n_labels, "inputs": ["texts"] if p.needs_texts else
                     (["texts", "features"] if p.reads_texts else ["features"]),
                     "max_k": self.batcher.max_k, "max_batch": self.batcher.max_batch,
                     "calibrated": p.calibrator is not None,
                     "warmup_seconds": round(self.warmup_seconds or 0.0, 3),
                     "served": {"requests": b.requests, "points": b.points, "batches": b.batches}}


def _handler(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "jxmc-serve"
        timeout = 60  # seconds a connection may stall (a client gone mid-body frees its thread)

        def log_message(self, format, *args):  # noqa: A002  (quiet: no line per request)
            pass

        def _send(self, status: int, obj: dict, close: bool = False) -> None:
            data = (json.dumps(obj) + "\n").encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:  # the client went away; nothing to tell it
                self.close_connection = True

        def _error(self, status: int, message: str, close: bool = False) -> None:
            self._send(status, {"error": " ".join(str(message).split())}, close=close)

        def do_GET(self):  # noqa: N802
            if self.path.split("?")[0] == "/health":
                status, obj = service.health()
                self._send(status, obj)
            elif self.path.split("?")[0] == "/predict":
                self._error(405, "use POST /predict")
            else:
                self._error(404, f"no such path {self.path!r}; use POST /predict or GET /health")

        def do_POST(self):  # noqa: N802
            if self.path.split("?")[0] != "/predict":
                self._error(404, f"no such path {self.path!r}; use POST /predict or GET /health",
                            close=True)
                return
            length = self.headers.get("Content-Length")
            if length is None:
                self._error(411, "a Content-Length header is required", close=True)
                return
            try:
                n = int(length)
                if n < 0:
                    raise ValueError
            except ValueError:
                self._error(400, f"bad Content-Length {length!r}", close=True)
                return
            if n > service.max_body:
                self._error(413, f"request body of {n} bytes is over the limit of "
                                 f"{service.max_body} bytes; send fewer points per request",
                            close=True)
                return
            try:
                body = self.rfile.read(n)
            except OSError:  # reset or timed out mid-body
                self.close_connection = True
                return
            if len(body) < n:  # the client closed the connection mid-body
                self.close_connection = True
                return
            if not service.ready:
                self._error(503, "warming up; try again when GET /health says ready")
                return
            try:
                obj = service.answer(body)
            except RequestError as e:
                self._error(e.status, e.message)
                return
            except Exception as e:  # noqa: BLE001  (one request's failure is not the service's)
                self._error(500, f"{type(e).__name__}: {e}")
                return
            self._send(200, obj)

    return Handler


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(args) -> int:
    """``jxmc serve``: loads the model, warms up, prints ``serving on http://host:port``
    (stdout, one line) and serves until interrupted."""
    from jxmc.commands import _mesh

    t0 = time.perf_counter()
    if args.max_batch < 1 or bucket(args.max_batch) != args.max_batch:
        raise ConfigError(f"--max-batch must be a power of two >= 1, got {args.max_batch}")
    for name, value in (("--max-k", args.max_k), ("--max-body", args.max_body),
                        ("--warm-nnz", args.warm_nnz)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], got {args.port}")
    predictor = Predictor(args.model_dir, overrides=args.overrides, mesh=_mesh(args))
    try:
        service = Service(predictor, host=args.host, port=args.port, max_batch=args.max_batch,
                          max_wait_ms=args.max_wait_ms, max_k=args.max_k, max_body=args.max_body,
                          warm_nnz=args.warm_nnz)
    except OSError as e:
        raise ConfigError(f"--host {args.host} --port {args.port}: cannot listen there: "
                          f"{e.strerror or e}") from None
    print(f"jxmc: loaded {predictor.method.name} from {args.model_dir}; warming up "
          f"(batches 1..{args.max_batch})", file=sys.stderr, flush=True)
    service.start()
    print(f"jxmc: ready in {time.perf_counter() - t0:.1f} s (warm-up {service.warmup_seconds:.1f} s)",
          file=sys.stderr, flush=True)
    print(f"serving on {service.url}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while service._thread.is_alive():
            service._thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        service.shutdown()
    return 0

"""jxmc serve: a real HTTP server on the loopback, talked to over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import scipy.sparse as sp
from toy_data import read_predictions, rows_as_text, trained_synthetic

from jxmc.cli import main
from jxmc.microbatch import Batcher, bucket
from jxmc.predictor import Predictor
from jxmc.serve import Service
from jxmc.types import TopK

# short rows (<= 6 non-zeros + the bias feature): one padded row length, few compiles
SPEC = "synthetic:n_train=300,n_test=24,n_labels=32,n_features=200,words_per_point=6,branching=4/4"
MAX_BODY = 16384


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny xr-linear model, `jxmc predict`'s answers on its test rows, and a running service."""
    d = tmp_path_factory.mktemp("serve")
    model = str(d / "m")
    Xte = trained_synthetic(model, SPEC)
    rows = rows_as_text(Xte)
    feats, out = d / "feats.txt", d / "pred.txt"
    feats.write_text(f"{len(rows)} {Xte.shape[1]}\n" + "\n".join(rows) + "\n")
    assert main(["predict", "--data", str(feats), "--model-dir", model, "--top-k", "10",
                 "--out", str(out)]) == 0
    expected = read_predictions(out)
    service = Service(Predictor(model), port=0, max_batch=4, max_wait_ms=20, max_k=10,
                      max_body=MAX_BODY, warm_nnz=8)
    service.listen()
    assert _get(service.url + "/health") == (503, {"status": "warming up"})  # not ready before warm-up
    assert _post(service.url, b'{"features": ["1:1"]}')[0] == 503
    service.start()
    yield service, model, rows, expected
    service.shutdown()


def _post(url: str, body: bytes, timeout: float = 60):
    req = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _predict(url, rows, k=10):
    status, obj = _post(url, json.dumps({"features": rows, "k": k}).encode())
    assert status == 200, obj
    return obj["predictions"]


def _check(pred, expected, k):
    assert len(pred) == len(expected)
    for got, want in zip(pred, expected, strict=True):
        assert [p["label"] for p in got] == [name for name, _ in want[:k]]
        np.testing.assert_allclose([p["score"] for p in got], [s for _, s in want[:k]],
                                   rtol=0, atol=1e-5)


def test_health_and_answers_equal_jxmc_predict(served):
    service, _, rows, expected = served
    status, health = _get(service.url + "/health")
    assert status == 200 and health["status"] == "ready" and health["method"] == "xr-linear"
    assert health["inputs"] == ["features"] and health["max_k"] == 10
    _check(_predict(service.url, rows, k=10), expected, 10)  # 24 rows: over max_batch, chunked
    _check(_predict(service.url, rows[:3], k=3), expected[:3], 3)
    _check(_predict(service.url, rows[5:6], k=1), expected[5:6], 1)
    item = _predict(service.url, rows[:1])[0][0]
    assert set(item) == {"label", "id", "score"} and item["label"] == str(item["id"])


def test_concurrent_clients_get_their_own_answers_in_order(served):
    service, _, rows, expected = served
    n_threads, per_thread = 8, 3
    start = threading.Barrier(n_threads)
    failures, done = [], []

    def client(t):
        start.wait()
        for r in range(per_thread):
            lo = (3 * t + r) % (len(rows) - 2)
            sel = slice(lo, lo + 1 + (t + r) % 2)  # one or two rows
            try:
                _check(_predict(service.url, rows[sel], k=5), expected[sel], 5)
                done.append(1)
            except AssertionError as e:  # pragma: no cover  (reported below)
                failures.append(f"client {t} request {r}: {e}")

    threads = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not failures, failures[:3]
    assert len(done) == n_threads * per_thread


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"rows": ["1:1"]}', "unknown key"),
    (b'{"k": 3}', "exactly one of"),
    (b'{"features": "1:1"}', "non-empty list"),
    (b'{"features": []}', "non-empty list"),
    (b'{"features": ["1:1", "200:1"]}', r"features[1]: feature id 200 >= n_features 200"),
    (b'{"features": ["1:x"]}', "not a number"),
    (b'{"features": [7]}', "not a string"),
    (b'{"features": ["1:1"], "k": 0}', "'k' must be an integer in [1, 10]"),
    (b'{"features": ["1:1"], "k": 11}', "'k' must be an integer in [1, 10]"),
    (b'{"features": ["1:1"], "k": "3"}', "'k' must be an integer"),
    (b'{"texts": ["some words"]}', "trained on sparse features"),
    (b"\xff\xfe", "malformed JSON"),
])
def test_bad_request_gets_400_with_a_one_line_reason_and_the_service_keeps_serving(served, body, reason):
    service, _, rows, expected = served
    status, obj = _post(service.url, body)
    assert status == 400
    assert set(obj) == {"error"} and reason in obj["error"] and "\n" not in obj["error"]
    _check(_predict(service.url, rows[:2], k=2), expected[:2], 2)


def _raw(service, data: bytes, read: bool = True) -> bytes:
    with socket.create_connection((service.host, service.port), timeout=30) as s:
        s.sendall(data)
        if not read:
            return b""
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
        return b"".join(chunks)


def test_oversized_body_gets_413_without_being_read(served):
    service, _, rows, expected = served
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MAX_BODY + 1}\r\n\r\n").encode()
    answer = _raw(service, head)  # the server answers and closes before any body byte
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert b'"error"' in answer and b"over the limit" in answer
    big = json.dumps({"features": rows * 40}).encode()
    assert len(big) > MAX_BODY
    conn = http.client.HTTPConnection(service.host, service.port, timeout=30)
    try:
        conn.request("POST", "/predict", body=big, headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed before the client had sent it all: refused either way
    finally:
        conn.close()
    _check(_predict(service.url, rows[:2], k=2), expected[:2], 2)


def test_other_http_errors(served):
    service, _, _, _ = served
    assert _get(service.url + "/nope")[0] == 404
    assert _get(service.url + "/predict")[0] == 405
    answer = _raw(service, b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411")


def test_clients_that_disconnect_do_not_stop_the_service(served):
    service, _, rows, expected = served
    body = json.dumps({"features": rows[:2]}).encode()
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    _raw(service, head + body[:10], read=False)  # gone mid-body
    _raw(service, head + body, read=False)  # gone before the answer
    _raw(service, head[:20], read=False)  # gone mid-headers
    time.sleep(0.2)
    _check(_predict(service.url, rows[:2], k=2), expected[:2], 2)
    assert _get(service.url + "/health")[0] == 200


class _Stub:
    """A predictor stand-in whose first call blocks until released (to fill the queue)."""

    needs_texts = False

    def __init__(self):
        self.release = threading.Event()
        self.sizes = []

    def topk(self, X, texts=None, *, k):
        self.sizes.append(X.shape[0])
        self.release.wait(30)
        v = X.toarray()[:, 0]  # each row's id is its first feature's value
        ids = np.repeat(v.astype(np.int32)[:, None], k, 1) + np.arange(k, dtype=np.int32)
        return TopK(ids, -np.tile(np.arange(k, dtype=np.float32), (X.shape[0], 1)))

    def result(self, topk):
        return topk


def test_batcher_gathers_queued_requests_into_one_padded_call_in_order():
    stub = _Stub()
    b = Batcher(stub, max_batch=8, max_wait_ms=200, max_k=4)
    rows = lambda *ids: sp.csr_matrix(np.array([[i, 0.0] for i in ids], np.float32))  # noqa: E731
    out = {}

    def go(name, X, k):
        out[name] = b.submit(X, None, k)

    first = threading.Thread(target=go, args=("a", rows(1), 2))
    first.start()
    while not stub.sizes:
        time.sleep(0.01)
    # while the first call runs, three requests queue up: 2 + 2 + 1 = 5 points
    rest = [threading.Thread(target=go, args=(n, X, k)) for n, X, k in
            (("b", rows(10, 11), 4), ("c", rows(20, 21), 1), ("d", rows(30), 3))]
    for th in rest:
        th.start()
    time.sleep(0.3)
    stub.release.set()
    for th in [first, *rest]:
        th.join(30)
    b.close()
    assert stub.sizes == [1, 8]  # one call for the three, 5 points padded to the bucket of 8
    assert b.calls == 2
    assert out["a"].ids.tolist() == [[1, 2]]
    assert out["b"].ids.tolist() == [[10, 11, 12, 13], [11, 12, 13, 14]]
    assert out["c"].ids.tolist() == [[20], [21]]
    assert out["d"].ids.tolist() == [[30, 31, 32]]
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]


def test_cli_serve_prints_its_url_and_serves(served):
    _, model, rows, expected = served
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "jxmc", "serve", "--model-dir", model, "--port", "0",
                             "--max-batch", "1", "--warm-nnz", "8", "--max-k", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving on http://127.0.0.1:"), (line, proc.stderr.read() if
                                                                 proc.poll() is not None else "")
        url = line.split()[-1]
        assert int(url.rsplit(":", 1)[1]) > 0
        assert _get(url + "/health")[1]["status"] == "ready"
        _check(_predict(url, rows[:2], k=5), expected[:2], 5)
    finally:
        proc.terminate()
        assert proc.wait(60) == 0


def test_cli_serve_refuses_a_bad_option_in_one_line(served):
    _, model, _, _ = served
    r = subprocess.run([sys.executable, "-m", "jxmc", "serve", "--model-dir", model, "--max-batch", "3"],
                       capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 2 and "power of two" in r.stderr and "Traceback" not in r.stderr

"""Tests of jxmc.metrics: hand-computed values, agreement with napkinxc, streaming, jit."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jxmc import metrics as M

nxm = pytest.importorskip("napkinxc.metrics")

KS10 = tuple(range(1, 11))
_jit_sums = jax.jit(M.metric_sums, static_argnames=("ks",))


# --------------------------------------------------------------------------- helpers


def _pad_rows(rows, width):
    out = np.full((len(rows), width), -1, np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _napkin_all(truth_lists, pred_lists, inv_ps, k):
    """napkinxc's values at 1..k for every metric, keyed like finalize()."""
    t = [list(map(int, r)) for r in truth_lists]
    p = [list(map(int, r)) for r in pred_lists]
    q = np.asarray(inv_ps, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # napkinxc's 0/0 -> NaN
        vals = _napkin_vals(t, p, q, k)
    out = {}
    for name, arr in vals.items():
        for i in range(k):
            key = f"{name}@{i + 1}" if name != "PSP_unnormalised" else f"PSP@{i + 1}_unnormalised"
            out[key] = float(arr[i])
    return out


def _napkin_vals(t, p, q, k):
    return {
        "P": nxm.precision_at_k(t, p, k=k),
        "nDCG": nxm.ndcg_at_k(t, p, k=k),
        "R": nxm.recall_at_k(t, p, k=k),
        "PSP": nxm.psprecision_at_k(t, p, q, k=k, normalize=True),
        "PSP_unnormalised": nxm.psprecision_at_k(t, p, q, k=k, normalize=False),
        "PSnDCG": nxm.psndcg_at_k(t, p, q, k=k, normalize=True),
    }


def _strip_trailing(row):
    row = list(row)
    while row and row[-1] == -1:
        row.pop()
    return row


def _assert_close(ours, ref, atol=1e-6):
    """ours == napkinxc; where napkinxc divides 0 by 0 (NaN) we return 0.0 instead."""
    for key, val in ref.items():
        if math.isnan(val):
            assert ours[key] == 0.0, key
            continue
        assert ours[key] == pytest.approx(val, abs=atol, rel=1e-6), key


def _random_case(rng, n_max=60, m_max=16, kp=10, L_range=(50, 500)):
    """Random truth (with empty rows and test-only ids >= L), predictions (with -1)."""
    L = int(rng.integers(*L_range))
    L_all = L + int(rng.integers(0, 21))
    n = int(rng.integers(1, n_max + 1))
    truths, preds = [], []
    for _ in range(n):
        size = 0 if rng.random() < 0.15 else int(rng.integers(1, m_max + 1))
        size = min(size, L_all)
        t = rng.choice(L_all, size=size, replace=False)
        # Bias towards test-only labels sometimes.
        if size and L_all > L and rng.random() < 0.3:
            t[0] = int(rng.integers(L, L_all))
            t = np.unique(t)
        truths.append(t.tolist())
        r = int(rng.integers(0, kp + 1))
        seen = [x for x in t.tolist() if x < L]
        pool = list(rng.permutation(seen)[: int(rng.integers(0, len(seen) + 1))]) if seen else []
        pool += rng.choice(L, size=min(kp, L), replace=False).tolist()
        uniq = list(dict.fromkeys(int(x) for x in pool))
        row = list(rng.permutation(uniq[: max(r, 0)]))[:r]
        row = [int(x) for x in row] + [-1] * (kp - len(row))
        if rng.random() < 0.2:  # -1 holes in the middle too
            row = [x if rng.random() > 0.3 else -1 for x in row]
        preds.append(row)
    counts = rng.integers(0, 50, size=L_all)
    counts[L:] = 0  # test-only labels have no training count
    n_train = int(rng.integers(10, 5000))
    q = M.inv_propensity(counts, n_train, *M.propensity_ab("eurlex-4k"))
    return L, L_all, truths, preds, q


# ------------------------------------------------------------------ hand computation


def _hand_case():
    # ids 0..4 predictable (L=5); id 5 occurs only in the test set.
    inv_prop = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32)
    truth = np.array([[0, 2], [3, 5], [-1, -1]], np.int32)  # point 2 has no labels
    pred = np.array([[0, 1, 2], [4, 3, -1], [1, 2, 3]], np.int32)
    return pred, truth, inv_prop


def test_hand_computed_values():
    pred, truth, inv_prop = _hand_case()
    res = M.finalize(M.metric_sums(pred, truth, inv_prop, ks=(1, 3)))
    d2 = 1 / math.log2(3)  # discount of rank 2
    d3 = 1 / math.log2(4)  # = 0.5
    idcg2 = 1 + d2  # ideal DCG over min(3, |y|) = 2 labels
    # hits: point 0 -> [1, 0, 1]; point 1 -> [0, 1, 0]; point 2 -> none.
    assert res["P@1"] == pytest.approx(1 / 3, abs=1e-6)
    assert res["P@3"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3, abs=1e-6)
    assert res["R@1"] == pytest.approx((1 / 2) / 3, abs=1e-6)
    assert res["R@3"] == pytest.approx((2 / 2 + 1 / 2 + 0) / 3, abs=1e-6)
    assert res["nDCG@1"] == pytest.approx(1 / 3, abs=1e-6)
    assert res["nDCG@3"] == pytest.approx(((1 + d3) / idcg2 + d2 / idcg2 + 0) / 3, abs=1e-6)
    # PSP@3: numerators (1+3)/3, 4/3, 0; best (3+1)/3, (6+4)/3 (id 5 counts), 0.
    assert res["PSP@3"] == pytest.approx((4 / 3 + 4 / 3) / (4 / 3 + 10 / 3), abs=1e-6)
    assert res["PSP@3"] == pytest.approx(4 / 7, abs=1e-6)
    assert res["PSP@3_unnormalised"] == pytest.approx((8 / 3) / 3, abs=1e-6)
    assert res["PSP@1"] == pytest.approx(1 / (3 + 6), abs=1e-6)
    assert res["PSP@1_unnormalised"] == pytest.approx(1 / 3, abs=1e-6)
    # PSnDCG@3: both labelled points share IDCG = idcg2, so it cancels in the ratio.
    num = (1 * 1 + 3 * d3) + 4 * d2
    best = (3 * 1 + 1 * d2) + (6 * 1 + 4 * d2)
    assert res["PSnDCG@3"] == pytest.approx(num / best, abs=1e-6)
    # And napkinxc agrees with the hand numbers.
    t = [[0, 2], [3, 5], []]
    p = [[0, 1, 2], [4, 3], [1, 2, 3]]
    _assert_close(res, {k: v for k, v in _napkin_all(t, p, inv_prop, 3).items() if "@2" not in k})


def test_hand_sums_and_count():
    pred, truth, inv_prop = _hand_case()
    sums = M.metric_sums(pred, truth, inv_prop, ks=(3,))
    assert float(sums["count"]) == 3.0
    assert float(sums["sum/P@3"]) == pytest.approx(1.0, abs=1e-6)
    assert float(sums["sum/PSP@3"]) == pytest.approx(8 / 3, abs=1e-6)
    assert float(sums["best/PSP@3"]) == pytest.approx(14 / 3, abs=1e-6)


def test_valid_mask_drops_rows():
    pred, truth, inv_prop = _hand_case()
    valid = np.array([True, False, True])
    res = M.finalize(M.metric_sums(pred, truth, inv_prop, valid, ks=(1, 3)))
    ref = M.finalize(M.metric_sums(pred[[0, 2]], truth[[0, 2]], inv_prop, ks=(1, 3)))
    assert res == pytest.approx(ref, abs=1e-7)
    assert res["P@1"] == pytest.approx(1 / 2, abs=1e-6)


# ------------------------------------------------------------- agreement w/ napkinxc


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_napkinxc_random(seed):
    rng = np.random.default_rng(seed)
    L, L_all, truths, preds, q = _random_case(rng)
    n = len(truths)
    # Fixed shapes so that every seed reuses one compilation.
    N, Mw, Q = 64, 16, 600
    truth = np.full((N, Mw), -1, np.int32)
    truth[:n] = _pad_rows(truths, Mw)
    pred = np.full((N, 10), -1, np.int32)
    pred[:n] = np.asarray(preds, np.int32)
    q_pad = np.zeros(Q, np.float32)
    q_pad[:L_all] = q
    valid = np.arange(N) < n
    ours = M.finalize(_jit_sums(pred, truth, q_pad, valid, ks=KS10))
    # -1 kept in napkinxc's input: a label it never finds in the truth, so never a hit.
    _assert_close(ours, _napkin_all(truths, preds, q, 10))
    # Trailing -1 stripped (shorter rankings; napkinxc still divides P@k by k).
    _assert_close(ours, _napkin_all(truths, [_strip_trailing(r) for r in preds], q, 10))


def test_agrees_with_napkinxc_wide_truth_sort_path():
    """m > 64 takes the sort + searchsorted path for hits; same answers."""
    rng = np.random.default_rng(123)
    L, L_all, truths, preds, q = _random_case(rng, n_max=40, m_max=120, L_range=(200, 400))
    width = max(M._BROADCAST_MAX_M + 1, max(len(t) for t in truths))
    truth = _pad_rows(truths, width)
    pred = np.asarray(preds, np.int32)
    ours = M.finalize(M.metric_sums(pred, truth, q, ks=(1, 3, 5, 10)))
    ref = _napkin_all(truths, preds, q, 10)
    _assert_close(ours, {k: v for k, v in ref.items() if k in ours})
    # Broadcast path on the same data (narrower padding is impossible, so compare hits).
    hits_sort = M._hits(jnp.asarray(pred), jnp.asarray(truth))
    hits_bc = jnp.any(
        (pred[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0), axis=-1
    ) & (pred >= 0)
    np.testing.assert_array_equal(np.asarray(hits_sort), np.asarray(hits_bc))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.tuples(
            st.lists(st.integers(0, 11), max_size=6, unique=True),  # truth; ids 8..11 unseen
            st.lists(st.integers(-1, 7), min_size=5, max_size=5),  # preds over L=8
        ),
        min_size=1,
        max_size=8,
    ),
    counts=st.lists(st.integers(0, 30), min_size=8, max_size=8),
)
def test_agrees_with_napkinxc_hypothesis(data, counts):
    truths = [t for t, _ in data]
    preds = []
    for _, p in data:  # make real predictions distinct within a row
        seen, row = set(), []
        for x in p:
            row.append(-1 if x in seen else x)
            if x >= 0:
                seen.add(x)
        preds.append(row)
    q = M.inv_propensity(np.array(counts + [0, 0, 0, 0]), n_train=50)
    n = len(truths)
    truth = np.full((8, 6), -1, np.int32)
    truth[:n] = _pad_rows(truths, 6)
    pred = np.full((8, 5), -1, np.int32)
    pred[:n] = np.asarray(preds, np.int32)
    valid = np.arange(8) < n
    ours = M.finalize(_jit_sums(pred, truth, q, valid, ks=(1, 2, 3, 4, 5)))
    _assert_close(ours, _napkin_all(truths, preds, q, 5))


# --------------------------------------------------------------------------- streaming


def _stream_case(seed=7):
    rng = np.random.default_rng(seed)
    L, L_all, truths, preds, q = _random_case(rng, n_max=60)
    while len(truths) < 40:  # want a few batches
        _, _, t2, p2, _ = _random_case(rng, n_max=60, L_range=(L, L + 1))
        truths += [[x for x in t if x < L_all] for t in t2]
        preds += p2
    Y = sp.lil_matrix((len(truths), L_all), dtype=np.float32)
    for i, t in enumerate(truths):
        for j in t:
            Y[i, j] = 1.0
    return truths, preds, q, Y.tocsr()


def test_evaluate_batch_sizes_agree_and_match_napkinxc():
    truths, preds, q, Y = _stream_case()
    n = len(truths)
    ks = (1, 3, 5, 10)
    results = [M.evaluate(np.asarray(preds), Y, q, ks=ks, batch_size=bs) for bs in (7, 16, n, 4096)]
    for res in results[1:]:
        assert res.keys() == results[0].keys()
        for key in res:
            assert res[key] == pytest.approx(results[0][key], abs=1e-6), key
    ref = _napkin_all([sorted(t) for t in truths], preds, q, 10)
    _assert_close(results[0], {k: v for k, v in ref.items() if k in results[0]})
    # Padded-array truth gives the same as CSR truth.
    res_pad = M.evaluate(np.asarray(preds), M.truth_to_padded(Y), q, ks=ks, batch_size=16)
    assert res_pad == pytest.approx(results[1], abs=1e-6)


def test_streaming_sums_equal_one_batch():
    truths, preds, q, Y = _stream_case(11)
    pred = np.asarray(preds, np.int32)
    truth = M.truth_to_padded(Y)
    whole = _jit_sums(pred, truth, q, ks=(1, 5))
    acc = M.empty_sums((1, 5))
    for s in range(0, len(pred), 9):
        acc = M.add_sums(acc, _jit_sums(pred[s : s + 9], truth[s : s + 9], q, ks=(1, 5)))
    for key in whole:
        assert float(acc[key]) == pytest.approx(float(whole[key]), rel=1e-5, abs=1e-5), key


def test_evaluate_compiles_once():
    jitted = M._metric_sums_jit
    if not hasattr(jitted, "_cache_size"):
        pytest.skip("jax.jit(...)._cache_size() not available")
    rng = np.random.default_rng(3)
    n, L = 53, 40
    Y = sp.random(n, L, density=0.1, format="csr", random_state=3)
    pred = rng.integers(-1, L, size=(n, 7)).astype(np.int32)
    q = np.ones(L, np.float32)
    before = jitted._cache_size()
    M.evaluate(pred, Y, q, ks=(1, 7), batch_size=13)  # 5 batches, last one padded
    assert jitted._cache_size() == before + 1
    M.evaluate(pred, Y, q, ks=(1, 7), batch_size=13)  # same shapes: no new compilation
    assert jitted._cache_size() == before + 1


def test_metric_sums_traces_once_across_batches():
    traces = []

    def counted(pred, truth, inv_prop, valid):
        traces.append(1)  # Python side effect: runs only while tracing
        return M.metric_sums(pred, truth, inv_prop, valid, ks=(1, 3))

    f = jax.jit(counted)
    truths, preds, q, Y = _stream_case(5)
    pred = np.asarray(preds, np.int32)
    truth = M.truth_to_padded(Y)
    bs = 8
    for s in range(0, len(pred), bs):
        p = np.full((bs, 10), -1, np.int32)
        t = np.full((bs, truth.shape[1]), -1, np.int32)
        rows = len(pred[s : s + bs])
        p[:rows], t[:rows] = pred[s : s + bs], truth[s : s + bs]
        f(p, t, q, np.arange(bs) < rows)
    assert len(traces) == 1


# -------------------------------------------------------------------------- propensity


def test_propensity_hand_values():
    q = M.inv_propensity(np.array([0, 10]), n_train=100)  # A=0.55, B=1.5
    # C = (ln 100 - 1) * 2.5**0.55 = 5.967504781407847
    # q_0 = 1 + C * 1.5**-0.55, q_1 = 1 + C * 11.5**-0.55
    np.testing.assert_allclose(q, [5.774661450557821, 2.557431532775994], rtol=1e-6)
    p = M.propensity(np.array([0, 10]), n_train=100)
    np.testing.assert_allclose(p, [0.17317032497262708, 0.3910173106040255], rtol=1e-6)
    q2 = M.inv_propensity(np.array([3]), 1000, *M.propensity_ab("Amazon-670K"))
    np.testing.assert_allclose(q2, [5.5320133572050505], rtol=1e-6)  # C = 12.741014131254552
    assert q.dtype == np.float32 and p.dtype == np.float32


def test_propensity_matches_napkinxc():
    Y = sp.random(300, 80, density=0.05, format="csr", random_state=0)
    Y.data[:] = 1.0
    for A, B in [(0.55, 1.5), (0.6, 2.6), (0.5, 0.4)]:
        ref = nxm.Jain_et_al_inverse_propensity(Y, A=A, B=B)
        ours = M.inv_propensity(M.label_counts(Y), Y.shape[0], A, B)
        np.testing.assert_allclose(ours, ref, rtol=1e-6)
        np.testing.assert_allclose(
            M.propensity(M.label_counts(Y), Y.shape[0], A, B),
            nxm.Jain_et_al_propensity(Y, A=A, B=B),
            rtol=1e-6,
        )


def test_propensity_ab_lookup():
    assert M.propensity_ab("Amazon-670K") == (0.6, 2.6)
    assert M.propensity_ab("amazon670k") == (0.6, 2.6)
    assert M.propensity_ab("AMAZON_3M") == (0.6, 2.6)
    assert M.propensity_ab("Wiki-500K") == (0.5, 0.4)
    assert M.propensity_ab("wiki500k") == (0.5, 0.4)
    assert M.propensity_ab("Eurlex-4K") == (0.55, 1.5)
    assert M.propensity_ab(None) == (0.55, 1.5)


def test_label_counts_and_errors():
    Y = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 1]], np.float32))
    np.testing.assert_array_equal(M.label_counts(Y), [1, 0, 2])
    np.testing.assert_array_equal(M.label_counts(Y, n_labels=5), [1, 0, 2, 0, 0])
    np.testing.assert_array_equal(M.label_counts(np.array([[0, 2], [2, -1]])), [1, 0, 2])
    with pytest.raises(ValueError):
        M.label_counts(Y, n_labels=2)
    with pytest.raises(ValueError):
        M.inv_propensity(np.array([1, 2]), n_train=0)
    with pytest.raises(ValueError):
        M.inv_propensity(np.array([-1, 2]), n_train=10)


# ------------------------------------------------------------------------------ edges


def test_all_rows_invalid_gives_zeros_not_nan():
    pred, truth, inv_prop = _hand_case()
    sums = M.metric_sums(pred, truth, inv_prop, np.zeros(3, bool), ks=(1, 3))
    assert float(sums["count"]) == 0.0
    res = M.finalize(sums)
    assert all(v == 0.0 for v in res.values())
    assert not any(math.isnan(v) for v in res.values())
    # Empty split through evaluate, and finalize of empty_sums.
    res = M.evaluate(np.zeros((0, 3), np.int32), sp.csr_matrix((0, 6)), inv_prop, ks=(1, 3))
    assert all(v == 0.0 for v in res.values())
    assert all(v == 0.0 for v in M.finalize(M.empty_sums()).values())


def test_all_predictions_missing():
    _, truth, inv_prop = _hand_case()
    pred = np.full((3, 3), -1, np.int32)
    res = M.finalize(M.metric_sums(pred, truth, inv_prop, ks=(1, 3)))
    assert all(v == 0.0 for v in res.values())
    ref = _napkin_all([[0, 2], [3, 5], []], [[], [], []], inv_prop, 3)
    _assert_close(res, {k: v for k, v in ref.items() if k in res})


def test_no_true_labels_anywhere():
    pred = np.array([[0, 1], [1, -1]], np.int32)
    truth = np.full((2, 3), -1, np.int32)
    res = M.finalize(M.metric_sums(pred, truth, np.ones(3, np.float32), ks=(1, 2)))
    assert all(v == 0.0 for v in res.values())


def test_zero_width_truth():
    pred = np.array([[0, 1]], np.int32)
    res = M.finalize(M.metric_sums(pred, np.zeros((1, 0), np.int32), np.ones(2), ks=(2,)))
    assert res["P@2"] == 0.0 and res["PSP@2"] == 0.0


def test_k_larger_than_predictions_raises_and_padding_matches_napkinxc():
    pred, truth, inv_prop = _hand_case()
    with pytest.raises(ValueError, match="larger than"):
        M.metric_sums(pred, truth, inv_prop, ks=(5,))
    with pytest.raises(ValueError, match="larger than"):
        M.evaluate(pred, truth, inv_prop, ks=(5,))
    # Padding with -1 columns gives napkinxc's k > len(prediction) convention.
    wide = np.concatenate([pred, np.full((3, 2), -1, np.int32)], axis=1)
    res = M.finalize(M.metric_sums(wide, truth, inv_prop, ks=(1, 2, 3, 4, 5)))
    ref = _napkin_all([[0, 2], [3, 5], []], [[0, 1, 2], [4, 3], [1, 2, 3]], inv_prop, 5)
    _assert_close(res, ref)
    assert res["P@5"] == pytest.approx(3 / 5 / 3, abs=1e-6)  # divides by k, not by 3


def test_argument_errors():
    pred, truth, inv_prop = _hand_case()
    for bad in [(), (0,), (1.5,), (True,)]:
        with pytest.raises(ValueError):
            M.metric_sums(pred, truth, inv_prop, ks=bad)
    with pytest.raises(ValueError):
        M.metric_sums(pred, truth[:2], inv_prop, ks=(1,))
    with pytest.raises(ValueError):
        M.metric_sums(pred[0], truth, inv_prop, ks=(1,))
    with pytest.raises(ValueError):
        M.add_sums(M.empty_sums((1,)), M.empty_sums((1, 3)))
    with pytest.raises(ValueError):
        M.finalize({"P@1": 1.0})
    with pytest.raises(ValueError, match="inv_prop"):
        M.evaluate(pred, truth, inv_prop[:5], ks=(1,))
    with pytest.raises(ValueError):
        M.evaluate(pred, truth, inv_prop, ks=(1,), batch_size=0)


def test_evaluate_without_inv_prop_and_with_topk():
    from jxmc.types import TopK

    pred, truth, inv_prop = _hand_case()
    res = M.evaluate(pred, truth, None, ks=(1, 3))
    assert not any(key.startswith("PS") for key in res)
    full = M.evaluate(TopK(pred, np.zeros(pred.shape, np.float32)), truth, inv_prop, ks=(1, 3))
    for key, val in res.items():
        assert full[key] == pytest.approx(val, abs=1e-7)


def test_truth_to_padded():
    Y = sp.csr_matrix(
        (np.array([1.0, 0.0, 1.0, 1.0, 1.0]), np.array([3, 1, 0, 2, 2]), np.array([0, 3, 3, 5])),
        shape=(3, 4),
    )  # row 0 has an explicit zero at id 1; row 2 has a duplicate id 2
    out = M.truth_to_padded(Y)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[0, 3], [-1, -1], [2, -1]])
    np.testing.assert_array_equal(
        M.truth_to_padded([[4, 1], [], [2]], width=3), [[4, 1, -1], [-1, -1, -1], [2, -1, -1]]
    )
    with pytest.raises(ValueError):
        M.truth_to_padded(Y, width=1)


def test_metric_sums_under_jit_equals_eager():
    pred, truth, inv_prop = _hand_case()
    eager = M.metric_sums(pred, truth, inv_prop, ks=(1, 3))
    jitted = jax.jit(M.metric_sums, static_argnames="ks")(
        jnp.asarray(pred), jnp.asarray(truth), jnp.asarray(inv_prop), jnp.ones(3, bool), ks=(1, 3)
    )
    assert set(eager) == set(jitted)
    for key in eager:
        assert jitted[key].dtype == jnp.float32 and jitted[key].shape == ()
        assert float(jitted[key]) == pytest.approx(float(eager[key]), abs=1e-6)
    # add_sums is jittable too.
    doubled = jax.jit(M.add_sums)(jitted, jitted)
    assert float(doubled["count"]) == 6.0

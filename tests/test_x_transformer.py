"""X-Transformer's parts on a tiny random encoder: the one-resolution matcher, the
rankers on the matcher's clusters, the score combination, the options.  (The method
contract, checkpoint resume included, is tests/test_methods_contract.py.)"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxmc.errors import ConfigError
from jxmc.models import get_method
from jxmc.models.transformer import common, x_transformer
from jxmc.models.transformer.xr_transformer import _concat
from jxmc.models.tree_linear import scoring
from jxmc.nn import cascade
from jxmc.nn.testing import tiny_encoder_dir, toy_texts
from jxmc.nn.tokenize import encode
from jxmc.ops.sparse import add_bias, csr_to_ell

N, L = 64, 16
SMALL = dict(pretrained=False, epochs=4, max_len=12, batch_size=8, max_leaf_size=4,
             nr_splits=2, lr_encoder=2e-3, lr_heads=1e-2, predict_batch_size=32, beam_size=2)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tiny_encoder_dir(str(tmp_path_factory.mktemp("enc")), words=32, layers=2,
                              hidden=32, max_len=16)
    texts, X, Y = toy_texts(N, L, words=32, seed=0)
    config = x_transformer.Config(encoder=folder, **SMALL)
    params = x_transformer.fit(X, Y, config, seed=0, texts=texts, progress=False)
    return config, texts, X, Y, params


def _matcher_logits(params, config, texts):
    """``f32[n, K]`` the cluster scores by the cascade network (level 1 only)."""
    bert, tok = common.unpack_encoder_files(params)
    K, B = (int(b) for b in params["branching"])
    spec = x_transformer.make_spec(config, bert, (K, B))
    ids, mask = encode(tok, texts, config.max_len)
    net = {"encoder": params["encoder"], "heads": {"level_1": params["matcher"]}}
    lv = cascade.forward(net, ids, mask, jnp.asarray(params["perm"]), spec=spec, upto=1)[0]
    out = np.full((len(texts), K), -np.inf, np.float32)
    np.put_along_axis(out, np.asarray(lv.ids), np.asarray(lv.scores), axis=1)
    return out


def test_one_resolution_matcher_over_the_clusters(fitted):
    config, texts, X, Y, params = fitted
    K, B = (int(b) for b in params["branching"])
    assert K > config.beam_size and K * B >= L  # clusters, then at most max_leaf_size labels
    assert B <= config.max_leaf_size
    assert params["matcher"]["w"].shape == (K, 32) and params["matcher"]["b"].shape == (K,)
    assert sorted(params["perm"][params["perm"] >= 0].tolist()) == list(range(L))
    # the matcher's single pass gives the network's cluster scores and the embedding
    bert, tok = common.unpack_encoder_files(params)
    ids, mask = encode(tok, texts, config.max_len)
    enc = common.encoder_module(bert)
    E, clusters, logits = x_transformer.match(params["encoder"], params["matcher"], enc, ids,
                                              mask, b=3, batch_size=24)
    full = _matcher_logits(params, config, texts)
    np.testing.assert_array_equal(clusters, np.argsort(-full, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(logits, np.take_along_axis(full, clusters, 1), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(E, common.embed_tokens(params["encoder"], enc, ids, mask,
                                                      batch_size=24), rtol=1e-5, atol=1e-6)
    # fine-tuning taught the matcher the clusters: its top cluster is a positive one
    # far more often than chance (1-3 positive labels, so clusters, of K)
    leaf_of = np.zeros(L, np.int64)  # each label's leaf position
    leaf_of[params["perm"][params["perm"] >= 0]] = np.flatnonzero(params["perm"] >= 0)
    cluster_pos = np.zeros((N, K), bool)
    rows, cols = Y.nonzero()
    cluster_pos[rows, leaf_of[cols] // B] = True
    hit = cluster_pos[np.arange(N), clusters[:, 0]].mean()
    chance = cluster_pos.mean()
    assert hit > chance + 0.25, (hit, chance)


def test_score_is_matcher_probability_times_transformed_ranker(fitted):
    """Recomputed on the host: every label of every cluster scored by the rankers,
    ``sigmoid(matcher) * exp(-max(1 - r, 0)^3)``, the beam's clusters only, top k."""
    config, texts, X, Y, params = fitted
    K, B = (int(b) for b in params["branching"])
    model = x_transformer.METHOD.prepare(params, config)
    n, k = 10, 5
    top = x_transformer.predict(model, X[:n], config, k=k, texts=texts[:n])
    st = model.state
    full = _matcher_logits(params, config, texts[:n])
    bert, tok = common.unpack_encoder_files(params)
    ids, mask = encode(tok, texts[:n], config.max_len)
    E = common.embed_tokens(params["encoder"], common.encoder_module(bert), ids, mask,
                            batch_size=32)
    q = csr_to_ell(add_bias(_concat(X[:n], E), config.bias))
    every = np.broadcast_to(np.arange(K, dtype=np.int32), (n, K))
    packed, dense = st.ranker
    r = np.asarray(scoring.level_scores(packed, dense, st.shape, q.indices, q.values,
                                        jnp.asarray(every), B))  # [n, K, B]
    score = (1 / (1 + np.exp(-full)))[:, :, None] * np.exp(-np.maximum(1 - r, 0) ** 3)
    perm = params["perm"].reshape(K, B)
    beam = np.argsort(-full, axis=1, kind="stable")[:, :config.beam_size]
    for i in range(n):
        cand = [(score[i, c, j], perm[c, j]) for c in beam[i] for j in range(B) if perm[c, j] >= 0]
        want = sorted(cand, key=lambda t: -t[0])[:k]
        np.testing.assert_allclose(top.scores[i], [s for s, _ in want], rtol=1e-4, atol=1e-6)
        got = set(top.ids[i].tolist())
        assert got <= {lab for _, lab in cand}  # only labels of the matcher's clusters
        assert len(got) == k


def test_learns_the_toy_labels(fitted):
    config, texts, X, Y, params = fitted
    top = x_transformer.predict(params, X, dataclasses.replace(config, beam_size=4), k=5,
                                texts=texts)
    p1 = np.asarray(Y[np.arange(N), top.ids[:, 0]]).mean()
    assert p1 > 0.6, p1  # chance is about 2/16


def test_ranker_negatives_are_the_matchers_clusters(fitted):
    """``tfn`` trains each ranker on its cluster's positives' points only; the default
    adds the matcher's top clusters (matcher-aware negatives), a different model."""
    config, texts, X, Y, params = fitted
    tfn = x_transformer.fit(X, Y, dataclasses.replace(config, ranker_negatives="tfn"), seed=0,
                            texts=texts, progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(params["matcher"]),
                    jax.tree_util.tree_leaves(tfn["matcher"]), strict=True):
        np.testing.assert_array_equal(a, b)  # the same matcher
    man_w, tfn_w = params["ranker"]["values"], tfn["ranker"]["values"]
    assert len(man_w) != len(tfn_w) or not np.allclose(man_w, tfn_w)


def test_bad_options_are_config_errors(fitted):
    config, texts, X, Y, params = fitted
    for bad in (dict(ranker_negatives="uniform"), dict(transform="sigmoid"),
                dict(beam_size=0)):
        with pytest.raises(ConfigError):
            x_transformer.fit(X, Y, dataclasses.replace(config, **bad), texts=texts,
                              progress=False)
    with pytest.raises(ConfigError):
        x_transformer.fit(X, Y, config, texts=None)
    with pytest.raises(ConfigError):
        x_transformer.predict(params, X[:, :-1], config, k=3, texts=texts)
    with pytest.raises(ConfigError):
        x_transformer.predict(params, X[:3], dataclasses.replace(config, transform="x"), k=3,
                              texts=texts[:3])
    assert get_method("x-transformer") is x_transformer.METHOD

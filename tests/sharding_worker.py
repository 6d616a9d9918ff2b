"""Runs one scale-out scenario in a fresh process with its own device count (the
tests in ``test_sharding*.py`` start it; pytest does not collect it).

    python tests/sharding_worker.py SCENARIO OUT [options]

``--devices N`` sets ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
before JAX is imported (the reason this is a separate process), with XLA's CPU
backend optimisation off: it halves compile times, and every comparison is
between programs compiled alike.  A scenario
only computes and writes arrays (``OUT/*.npz``), compiled HLO text and JSON;
the tests hold the checks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _args():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["topk", "step", "ckpt-save", "ckpt-restore", "dist",
                                        "xrl", "text", "transformer", "dist-text",
                                        "elmo"])
    p.add_argument("out")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--ckpt", default=None)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--mesh", default=None, help="xrl: a --mesh spec, or none")
    p.add_argument("--stop-after", type=int, default=0,
                   help="dist-text: exit at once (as if killed) after saving this step")
    p.add_argument("--tag", default="run", help="dist-text: the output files' prefix")
    return p.parse_args()


ARGS = _args()
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={ARGS.devices} "
                           "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if ARGS.scenario in ("dist", "dist-text") and ARGS.num_processes > 1:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from jxmc import sharding as S

    S.initialize_distributed(f"localhost:{ARGS.port}", ARGS.num_processes, ARGS.process_id,
                             timeout_s=60)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jxmc import sharding as S  # noqa: E402
from jxmc.ops.topk import sharded_table_top_k, sharded_top_k  # noqa: E402

MESHES = ("data=2,model=4", "data=1,model=8", "data=4,model=2", "data=8,model=1")


def _flat(tree, prefix: str) -> dict:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {f"{prefix}{S.path_name(p)}": np.asarray(S.to_host(a)) for p, a in leaves}


def topk(out: str) -> None:
    rng = np.random.default_rng(0)
    n, L, k = 16, 1000, 5
    scores = rng.integers(0, 6, (n, L)).astype(np.float32)  # many ties
    scores[1, :] = 0.0  # a row of equal scores
    scores[2, 10:] = -np.inf  # fewer finite scores than k
    res = {"scores": scores}
    for spec in MESHES:
        mesh = S.mesh_from_string(spec)
        placed = jax.device_put(scores, S.scores_sharding(mesh))
        v, i = sharded_top_k(placed, k, mesh=mesh)
        res[f"{spec}/values"], res[f"{spec}/ids"] = np.asarray(v), np.asarray(i)
    mesh = S.mesh_from_string("data=2,model=4")
    odd = scores[:14, :997]  # neither n nor L splits evenly: padded inside
    v, i = sharded_top_k(odd, 7, mesh=mesh)
    res["odd/values"], res["odd/ids"] = np.asarray(v), np.asarray(i)
    # integer-valued x, w, b: exact dot products, so ties are exact too
    x = rng.integers(-2, 3, (16, 8)).astype(np.float32)
    w = rng.integers(-2, 3, (1024, 8)).astype(np.float32)
    b = rng.integers(-2, 3, 1024).astype(np.float32)
    res.update(x=x, w=w, b=b)
    xs = jax.device_put(x, S.batch_sharding(mesh))
    ws, bs = (jax.device_put(a, S.label_sharding(mesh)) for a in (w, b))
    for chunk in (None, 48):
        v, i = sharded_table_top_k(xs, ws, bs, k, mesh=mesh, chunk=chunk)
        res[f"table{chunk}/values"], res[f"table{chunk}/ids"] = np.asarray(v), np.asarray(i)
    np.savez(os.path.join(out, "topk.npz"), **res)
    placed = jax.device_put(scores, S.scores_sharding(mesh))
    hlo = {
        "sharded": sharded_top_k.lower(placed, k, mesh=mesh).compile().as_text(),
        "table": sharded_table_top_k.lower(xs, ws, bs, k, mesh=mesh).compile().as_text(),
        # the control: XLA's own partitioning of a top-k over the sharded label axis
        "naive": jax.jit(lambda s: jax.lax.top_k(s, k)).lower(placed).compile().as_text(),
    }
    for name, text in hlo.items():
        with open(os.path.join(out, f"{name}.hlo.txt"), "w") as f:
            f.write(text)
    with open(os.path.join(out, "topk.json"), "w") as f:
        json.dump({"n": n, "L": L, "k": k, "shards": mesh.shape[S.MODEL],
                   "data": mesh.shape[S.DATA]}, f)


def _cascade_setup(n: int = 32):
    import scipy.sparse as sp

    from jxmc.nn import cascade
    from jxmc.nn.encoder import BertConfig, BertEncoder, init_params
    from jxmc.nn.heads import init_table
    from jxmc.tree.label_tree import LabelTree
    from jxmc.tree.shortlist import level_positives

    bert = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=8)
    rng = np.random.default_rng(0)
    perm = np.concatenate([rng.permutation(13), -np.ones(3, np.int64)]).astype(np.int32)
    tree = LabelTree(perm, (4, 2, 2))  # K = 4, 8, 16: every level splits 4 ways
    Y = sp.csr_matrix((rng.random((n, 13)) < 0.25).astype(np.float32))
    ids = rng.integers(5, 30, size=(n, 8)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[:, 6:] = rng.integers(0, 2, size=(n, 2))
    arrays = {"ids": ids, "mask": mask, "pos": level_positives(Y, tree, 4)}
    spec = cascade.Spec(BertEncoder(bert), tree.branching, ((0,), (0,), ()), beam=2, dropout=0.1)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    params = {"encoder": jax.tree_util.tree_map(np.asarray, init_params(bert, jax.random.PRNGKey(0))),
              "heads": {f"level_{t}": init_table(keys[t - 1], K, 16)
                        for t, K in enumerate(tree.level_sizes(), 1)}}
    return tree, arrays, spec, params


def step(out: str) -> None:
    from jxmc.nn import cascade
    from jxmc.train.batches import batches
    from jxmc.train.optim import make_optimizer
    from jxmc.train.step import init_state, make_train_step

    tree, arrays, spec, params = _cascade_setup()
    perm = jnp.asarray(tree.perm)
    tx = make_optimizer(lr_encoder=1e-3, lr_heads=1e-2, total_steps=8, warmup_steps=1)

    def loss(p, b, r):
        return cascade.loss_fn(p, b, r, perm, spec=spec, train_levels=(1, 2, 3))

    def predict(p, b):
        return cascade.predict_topk(p, b["ids"], b["mask"], perm, spec=spec, k=5)

    res, info = _flat(params, "init/params/"), {}
    for name in ("single", "data=2,model=4"):
        train_step = make_train_step(loss, tx)
        if name == "single":
            state = init_state(params, tx, 0)
            run = train_step
        else:
            mesh = S.mesh_from_string(name)
            state = S.init_train_state(params, tx, 0, mesh=mesh)
            run = S.shard_train_step(train_step, state, mesh)
            w = state.params["heads"]["level_3"]["w"]
            info["table_spec"] = str(w.sharding.spec)
            info["table_shard_shapes"] = [list(s.data.shape) for s in w.addressable_shards]
            info["encoder_spec"] = str(jax.tree_util.tree_leaves(
                state.params["encoder"])[0].sharding.spec)
            info["mu_specs"] = sorted({str(a.sharding.spec) for a in
                                       jax.tree_util.tree_leaves(state.opt_state)})
        losses = []
        for epoch in range(2):
            for b in batches(arrays, 8, epoch=epoch):
                state, m = run(state, b)
                losses.append(float(m["loss"]))
        res[f"{name}/losses"] = np.asarray(losses)
        res.update(_flat(state.params, f"{name}/params/"))
        batch = next(batches(arrays, 16, epoch=None))
        if name == "single":
            top = jax.jit(predict)(state.params, batch)
        else:
            top = S.shard_predict_step(predict, state.params, mesh)(state.params, batch)
            info["predict_spec"] = str(top.ids.sharding.spec)
        res[f"{name}/pred_ids"], res[f"{name}/pred_scores"] = S.to_host(tuple(top))
    np.savez(os.path.join(out, "step.npz"), **res)
    with open(os.path.join(out, "step.json"), "w") as f:
        json.dump(info, f)


def _ckpt_tree(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"heads": {"level_1": {"w": rng.standard_normal((16, 6)).astype(np.float32),
                                  "b": rng.standard_normal(16).astype(np.float32)},
                      "level_2": {"w": rng.standard_normal((64, 6)).astype(np.float32),
                                  "b": rng.standard_normal(64).astype(np.float32)}},
            "encoder": {"kernel": rng.standard_normal((6, 6)).astype(np.float32)},
            "step": np.asarray(7, np.int32)}


def ckpt_save(out: str) -> None:
    from jxmc.checkpoint import save_sharded

    mesh = S.mesh_from_string("data=2,model=4")
    tree = S.shard_tree(_ckpt_tree(), mesh)
    save_sharded(ARGS.ckpt, tree)
    np.savez(os.path.join(out, "source.npz"), **_flat(_ckpt_tree(), ""))
    with open(os.path.join(out, "save.json"), "w") as f:
        json.dump({"devices": len(jax.devices()),
                   "spec": str(tree["heads"]["level_2"]["w"].sharding.spec)}, f)


def ckpt_restore(out: str) -> None:
    from jxmc.checkpoint import restore_sharded, save_sharded

    like = _ckpt_tree()
    res, info = {}, {"devices": len(jax.devices())}

    def restore(path, spec, devices, name):
        mesh = S.make_mesh(S.parse_mesh(spec, len(devices)), devices)
        target = S.abstract(like, S.tree_shardings(like, mesh))
        tree = restore_sharded(path, target)
        w = tree["heads"]["level_2"]["w"]
        info[name] = {"mesh": dict(mesh.shape), "spec": str(w.sharding.spec),
                      "devices": sorted(d.id for d in w.sharding.device_set),
                      "shard_shapes": sorted({tuple(s.data.shape) for s in w.addressable_shards})}
        res.update(_flat(tree, f"{name}/"))
        return tree

    devs = jax.devices()
    four = restore(ARGS.ckpt, "data=1,model=4", devs, "8to4")
    restore(ARGS.ckpt, "data=2,model=2", devs, "8to2x2")
    restore(ARGS.ckpt, "data=1,model=1", devs[:1], "8to1")
    second = os.path.join(os.path.dirname(ARGS.ckpt), "from4")
    save_sharded(second, four)
    restore(second, "data=1,model=1", devs[:1], "4to1")
    np.savez(os.path.join(out, "restore.npz"), **res)
    with open(os.path.join(out, "restore.json"), "w") as f:
        json.dump(info, f)


def dist(out: str) -> None:
    """The same sharded top-k, heads-only train steps and XR-Linear fit + sharded beam
    search in 1 or 2 processes (4 devices)."""
    import optax

    from jxmc.nn.heads import score_dense, score_shortlist, table_init
    from jxmc.train.step import make_train_step

    mesh = S.mesh_from_string("data=2,model=2")
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, (8, 200)).astype(np.float32)
    v, i = sharded_top_k(S.put(scores, S.scores_sharding(mesh)), 6, mesh=mesh)
    res = {"topk_values": S.to_host(v), "topk_ids": S.to_host(i)}

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return {"encoder": {"w": jax.random.normal(k1, (12, 8)) * 0.3},
                "heads": {"level_1": table_init(k2, 8, 8, std=0.3),
                          "level_2": table_init(k3, 32, 8, std=0.3)}}

    params = S.create_sharded(init, jax.random.PRNGKey(0), mesh=mesh)

    def loss_fn(p, b, r):
        x = jnp.tanh(b["x"] @ p["encoder"]["w"])
        s1 = score_dense(p["heads"]["level_1"], x)
        s2 = score_shortlist(p["heads"]["level_2"], x, b["cand"])
        l1 = optax.sigmoid_binary_cross_entropy(s1, b["y1"]).sum(1)
        l2 = optax.sigmoid_binary_cross_entropy(s2, b["y2"]).sum(1)
        loss = jnp.sum((l1 + l2) * b["valid"]) / jnp.maximum(b["valid"].sum(), 1)
        return loss, {"l1": jnp.mean(l1)}

    tx = optax.adam(0.05)
    state = S.init_train_state(params, tx, 0, mesh=mesh)
    run = S.shard_train_step(make_train_step(loss_fn, tx), state, mesh)
    losses = []
    for t in range(3):
        r = np.random.default_rng(t)
        batch = {"x": r.standard_normal((8, 12)).astype(np.float32),
                 "cand": r.integers(0, 32, (8, 6)).astype(np.int32),
                 "y1": (r.random((8, 8)) < 0.3).astype(np.float32),
                 "y2": (r.random((8, 6)) < 0.3).astype(np.float32),
                 "valid": np.arange(8) < 7}
        state, m = run(state, batch)
        losses.append(float(S.to_host(m["loss"])))
    res["losses"] = np.asarray(losses)
    res.update(_flat(state.params, "params/"))
    # XR-Linear: every process solves the rankers on its own devices (the same model),
    # then the sharded beam search spans both processes' devices
    from jxmc.models.tree_linear import xr_linear

    X, Y = _xrl_data()
    cfg = xr_linear.Config(max_leaf_size=3, nr_splits=2, beam_size=3, predict_batch_size=16,
                           max_epochs=5)
    model = xr_linear.fit(X[:120], Y[:120], cfg, seed=0, progress=False, mesh=mesh)
    top = xr_linear.predict(model, X[120:], cfg, k=4, mesh=mesh)
    res["xrl_ids"], res["xrl_scores"] = top.ids, top.scores
    res["xrl_values"] = model["levels"]["level_2"]["values"]
    info = {"process_count": jax.process_count(), "devices": len(jax.devices()),
            "local_devices": len(jax.local_devices()), "mesh": dict(mesh.shape)}
    np.savez(os.path.join(out, f"dist{ARGS.process_id}.npz"), **res)
    with open(os.path.join(out, f"dist{ARGS.process_id}.json"), "w") as f:
        json.dump(info, f)


def _xrl_data(n: int = 160, d: int = 40, L: int = 20, seed: int = 0):
    from toy_data import planted  # tests/ is this script's folder

    return planted(n, d, L, seed, density=0.2)


def xrl(out: str) -> None:
    """XR-Linear fit (MAN negatives: the training-set beam runs on the mesh too) and
    predict, on ``--mesh`` or on one device; records the devices the solver's
    chunks ran on and the compiled sharded beam's HLO."""
    from jxmc.models.tree_linear import mesh as xr_linear_mesh
    from jxmc.models.tree_linear import rankers, scoring, xr_linear
    from jxmc.ops import sparse_weights as sw
    from jxmc.ops.sparse import add_bias

    X, Y = _xrl_data()
    # tiny chunks (one parent each): many chunks, several rounds over the devices
    # host_queries=0: the one-device run takes the device path, which the mesh's equals bit
    # for bit (the host beam of a few queries agrees up to float32 summation order)
    cfg = xr_linear.Config(max_leaf_size=3, nr_splits=2, beam_size=3, predict_batch_size=16,
                           chunk_weights=8, negatives="tfn+man", max_epochs=5, host_queries=0)
    mesh = None if ARGS.mesh in (None, "none") else S.mesh_from_string(ARGS.mesh)
    used = []
    solve = rankers.svm_dual.solve_dual_cd

    def recording(*args, **kw):
        used.append(sorted(d.id for d in jax.tree_util.tree_leaves(args)[0].devices()))
        return solve(*args, **kw)

    rankers.svm_dual.solve_dual_cd = recording
    # compilation charged nothing: toy chunks would otherwise all stay on the device
    # that compiled their level's program (rankers.DevicePool), and this run checks
    # that the chunks go to every device of the mesh
    rankers.DevicePool.COMPILE_US = 0.0
    params = xr_linear.fit(X[:120], Y[:120], cfg, seed=0, progress=False, mesh=mesh)
    rankers.svm_dual.solve_dual_cd = solve
    top = xr_linear.predict(params, X[120:], cfg, k=4, mesh=mesh)
    res = {f"levels/{lv}/{key}": np.asarray(a) for lv, arrs in params["levels"].items()
           for key, a in arrs.items()}
    res.update(perm=np.asarray(params["perm"]), ids=top.ids, scores=top.scores)
    info = {"chunk_devices": used, "branching": [int(b) for b in params["branching"]]}
    if mesh is not None:
        tree = scoring.tree_of(params)
        shapes, dev = xr_linear_mesh.sharded_levels(params, tree.depth, mesh)
        n = 8 * mesh.shape[S.DATA]
        x = csr_to_ell_batch(add_bias(X[120:120 + n], cfg.bias))
        q = S.shard_batch(x, mesh)
        perm = S.put(np.asarray(tree.perm), S.replicated(mesh))
        hlo = xr_linear_mesh.beam_batch.lower(
            dev, perm, *q, mesh=mesh, branching=tree.branching, shapes=shapes,
            beam=cfg.beam_size, k=4, leaf_ids=True, transform=cfg.transform,
            merge=False).compile().as_text()
        with open(os.path.join(out, "beam.hlo.txt"), "w") as f:
            f.write(hlo)
        sizes = {}
        for lv in dev:
            for dev_id, nbytes in S.device_bytes(lv).items():
                sizes[dev_id] = sizes.get(dev_id, 0) + nbytes
        one_device = sum(np.asarray(a).nbytes for i in range(1, tree.depth + 1)
                         for a in jax.tree_util.tree_leaves(sw.scoring_layout(
                             {k_: params["levels"][f"level_{i}"][k_]
                              for k_ in scoring.LEVEL_KEYS}, tree.branching[i - 1])[:2]))
        info.update(n=n, data=mesh.shape[S.DATA], model=mesh.shape[S.MODEL],
                    one_device_layout_bytes=int(one_device),
                    mesh_devices=sorted(d.id for d in mesh.devices.flat),
                    level_bytes_per_device=sizes,
                    level_bytes_total=int(sum(np.asarray(a).nbytes
                                              for arrs in params["levels"].values()
                                              for a in arrs.values())))
    np.savez(os.path.join(out, "xrl.npz"), **res)
    with open(os.path.join(out, "xrl.json"), "w") as f:
        json.dump(info, f)


def text(out: str) -> None:
    """cascadexml, lightxml and xr-transformer trained and run on one device and on
    ``--mesh`` (tiny random encoder), then re-fitted from their finished checkpoints
    on the mesh (the restored state goes back into the mesh layout)."""
    from jxmc.checkpoint import TrainCheckpoints
    from jxmc.models.transformer import cascadexml, lightxml, xr_transformer
    from jxmc.nn.testing import tiny_encoder_dir, toy_texts

    folder = tiny_encoder_dir(os.path.join(out, "enc"), words=32, layers=2, hidden=32,
                              max_len=16)
    texts, X, Y = toy_texts(48, 12, words=32, seed=0)
    small = dict(pretrained=False, epochs=2, max_len=12, batch_size=16, max_leaf_size=4,
                 nr_splits=2, lr_encoder=1e-3, predict_batch_size=32, beam_size=2)
    mesh = S.mesh_from_string(ARGS.mesh)
    res, info, seen = {}, {}, []
    train_step, predict_step = S.shard_train_step, S.shard_predict_step

    def recording_train(step_fn, state, mesh):  # the layouts the sharded steps get
        seen.append({S.path_name(p): str(a.sharding.spec) for p, a in
                     jax.tree_util.tree_leaves_with_path(state.params)
                     if S.path_name(p).startswith("heads/")})
        return train_step(step_fn, state, mesh)

    def recording_predict(fn, params, mesh):
        lay = {S.path_name(p): str(a.sharding.spec) for p, a in
               jax.tree_util.tree_leaves_with_path(params)
               if S.path_name(p).startswith("heads/")}
        if lay:  # not xr-transformer's encoder pass (no label tables)
            seen.append(lay)
        return predict_step(fn, params, mesh)

    S.shard_train_step, S.shard_predict_step = recording_train, recording_predict
    for module in (cascadexml, lightxml, xr_transformer):
        name = module.METHOD.name
        extra = {"levels": 2} if module is xr_transformer else {}
        config = module.Config(encoder=folder, **small, **extra)
        for where, m in (("one", None), ("mesh", mesh)):
            ckpt = TrainCheckpoints(os.path.join(out, f"ck-{name}-{where}"))
            params = module.fit(X, Y, config, seed=0, texts=texts, progress=False, ckpt=ckpt,
                                mesh=m)
            top = module.predict(params, X, config, k=4, texts=texts, mesh=m)
            res.update(_flat(params, f"{name}/{where}/params/"))
            res[f"{name}/{where}/ids"], res[f"{name}/{where}/scores"] = top.ids, top.scores
            if m is not None:
                again = module.fit(X, Y, config, seed=0, texts=texts, progress=False,
                                   ckpt=ckpt, mesh=m)  # every epoch done: restored only
                res.update(_flat(again, f"{name}/resumed/params/"))
        info[name] = {"layouts": seen[:]}
        seen.clear()
    np.savez(os.path.join(out, "text.npz"), **res)
    with open(os.path.join(out, "text.json"), "w") as f:
        json.dump(info, f)


def transformer(out: str) -> None:
    """(1) A cascade with a wide dense first level (``K_1 = 64``) on ``data=2,model=4``:
    predictions and two train steps with the hand-written mesh steps (``mesh=``: the
    sharded top-k, the shard-local shortlist scores) against XLA's own partitioning
    of the same functions and one device; the compiled HLO of both.  (2) XR-Transformer
    fitted on one device, predicted on one device and on 4-device meshes, with the
    layouts its encoder pass ran in."""
    import scipy.sparse as sp

    from jxmc.nn import cascade
    from jxmc.nn.encoder import BertConfig, BertEncoder, init_params
    from jxmc.nn.heads import init_table
    from jxmc.train.batches import batches
    from jxmc.train.optim import make_optimizer
    from jxmc.train.step import init_state, make_train_step
    from jxmc.tree.label_tree import LabelTree
    from jxmc.tree.shortlist import level_positives

    bert = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=8)
    rng = np.random.default_rng(0)
    n_labels, n, k, beam = 250, 32, 5, 3
    perm = np.concatenate([rng.permutation(n_labels), -np.ones(6, np.int64)]).astype(np.int32)
    tree = LabelTree(perm, (64, 4))
    Y = sp.csr_matrix((rng.random((n, n_labels)) < 0.02).astype(np.float32))
    ids = rng.integers(5, 30, size=(n, 8)).astype(np.int32)
    mask = np.ones_like(ids)
    arrays = {"ids": ids, "mask": mask, "pos": level_positives(Y, tree, 4)}
    spec = cascade.Spec(BertEncoder(bert), tree.branching, ((0,), ()), beam=beam)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    params = {"encoder": jax.tree_util.tree_map(np.asarray, init_params(bert, jax.random.PRNGKey(0))),
              "heads": {f"level_{t}": init_table(keys[t - 1], K, 16, std=0.5)
                        for t, K in enumerate(tree.level_sizes(), 1)}}
    pj = jnp.asarray(tree.perm)
    mesh = S.mesh_from_string("data=2,model=4")
    res, info = {}, {"n": 16, "k": k, "beam": beam, "K1": 64, "branching": list(tree.branching),
                     "data": 2, "model": 4}
    batch = next(batches(arrays, 16, epoch=None))
    for name, m in (("mesh", mesh), ("xla", None)):
        def predict(p, b, m=m):
            return cascade.predict_topk(p, b["ids"], b["mask"], pj, spec=spec, k=k, mesh=m)

        placed = S.shard_tree(params, mesh)
        run = S.shard_predict_step(predict, placed, mesh)
        res[f"{name}/pred_ids"], res[f"{name}/pred_scores"] = S.to_host(tuple(run(placed, batch)))
        hb = S.shard_batch(batch, mesh)
        with open(os.path.join(out, f"predict-{name}.hlo.txt"), "w") as f:
            f.write(run.jitted.lower(placed, hb).compile().as_text())
        tx = make_optimizer(lr_encoder=1e-3, lr_heads=1e-2, total_steps=4, warmup_steps=1)

        def loss(p, b, r, m=m):
            return cascade.loss_fn(p, b, r, pj, spec=spec, train_levels=(1, 2), mesh=m)

        state = S.init_train_state(params, tx, 0, mesh=mesh)
        step = S.shard_train_step(make_train_step(loss, tx), state, mesh)
        with open(os.path.join(out, f"train-{name}.hlo.txt"), "w") as f:
            f.write(step.jitted.lower(state, S.shard_batch(batch, mesh)).compile().as_text())
        losses = []
        for b in batches(arrays, 16, epoch=0):
            state, met = step(state, b)
            losses.append(float(met["loss"]))
        res[f"{name}/losses"] = np.asarray(losses)
    top = jax.jit(lambda p, b: cascade.predict_topk(p, b["ids"], b["mask"], pj, spec=spec,
                                                    k=k))(params, batch)
    res["one/pred_ids"], res["one/pred_scores"] = (np.asarray(a) for a in top)
    state = init_state(params, tx, 0)
    step = make_train_step(lambda p, b, r: cascade.loss_fn(p, b, r, pj, spec=spec,
                                                           train_levels=(1, 2)), tx)
    losses = []
    for b in batches(arrays, 16, epoch=0):
        state, met = step(state, b)
        losses.append(float(met["loss"]))
    res["one/losses"] = np.asarray(losses)

    # (2) XR-Transformer: the encoder pass and XR-Linear's beam on a mesh
    from jxmc.models.transformer import xr_transformer as xrt
    from jxmc.nn.testing import tiny_encoder_dir, toy_texts

    folder = tiny_encoder_dir(os.path.join(out, "enc"), words=32, layers=2, hidden=32,
                              max_len=16)
    texts, X, Yt = toy_texts(48, 12, words=32, seed=0)
    config = xrt.Config(encoder=folder, pretrained=False, epochs=2, max_len=12, batch_size=16,
                        max_leaf_size=4, nr_splits=2, lr_encoder=1e-3, predict_batch_size=16,
                        beam_size=2, levels=2)
    model = xrt.fit(X, Yt, config, seed=0, texts=texts, progress=False)
    top = xrt.predict(model, X, config, k=4, texts=texts)
    res["xrt/one/ids"], res["xrt/one/scores"] = top.ids, top.scores
    devs = jax.devices()[:4]
    info["xrt"] = {}
    embeds = []
    shard_predict = S.shard_predict_step

    def recording(fn, params, mesh):  # the layouts of the steps prediction runs on the mesh
        embeds.append(sorted({len(a.sharding.device_set) for a in jax.tree_util.tree_leaves(params)}))
        return shard_predict(fn, params, mesh)

    S.shard_predict_step = recording
    for spec_ in ("data=2,model=2", "data=4,model=1"):
        m = S.mesh_from_string(spec_, devs)
        prepared = xrt.METHOD.prepare(model, config, m)
        enc = jax.tree_util.tree_leaves(prepared.state.encoder)
        embeds.clear()
        top = xrt.predict(prepared, X, config, k=4, texts=texts)
        res[f"xrt/{spec_}/ids"], res[f"xrt/{spec_}/scores"] = top.ids, top.scores
        info["xrt"][spec_] = {"encoder_devices": sorted({d.id for a in enc
                                                         for d in a.sharding.device_set}),
                              "encoder_specs": sorted({str(a.sharding.spec) for a in enc}),
                              "predict_steps": embeds[:]}
    S.shard_predict_step = shard_predict
    np.savez(os.path.join(out, "transformer.npz"), **res)
    with open(os.path.join(out, "transformer.json"), "w") as f:
        json.dump(info, f)


def dist_text(out: str) -> None:
    """cascadexml (tiny random encoder) trained on ``--mesh`` across 1 or 2 processes,
    checkpointed every epoch into ``--ckpt`` (shard by shard); with ``--stop-after S``
    the processes exit at once after saving step ``S`` (as if killed), a rerun resumes.
    Writes the trained params and the predictions (``OUT/<tag><process>.npz``)."""
    from jxmc.checkpoint import TrainCheckpoints
    from jxmc.models.transformer import cascadexml
    from jxmc.nn.testing import tiny_encoder_dir, toy_texts

    pid = jax.process_index()
    folder = tiny_encoder_dir(os.path.join(out, f"enc{pid}"), words=32, layers=1, hidden=16,
                              heads=2, max_len=16)
    texts, X, Y = toy_texts(32, 12, words=32, seed=0)
    config = cascadexml.Config(encoder=folder, pretrained=False, epochs=2, max_len=12,
                               batch_size=16, max_leaf_size=4, nr_splits=2, lr_encoder=1e-3,
                               predict_batch_size=16, beam_size=2, levels=2)
    mesh = S.mesh_from_string(ARGS.mesh)
    ckpt = TrainCheckpoints(ARGS.ckpt, max_to_keep=5)
    handed = []  # what save_state / restore_state hand orbax
    if ARGS.stop_after:
        save = ckpt.save

        def save_then_die(step, state):
            save(step, state)
            if step == ARGS.stop_after:
                os._exit(17)  # no clean-up, no distributed shutdown: a kill after the save

        ckpt.save = save_then_die
    start = ckpt.latest_step() or 0
    from jxmc.train import loop

    leaf = loop._leaf

    def recording(a):  # global arrays on the mesh (shard by shard), or numpy
        r = leaf(a)
        handed.append("global" if isinstance(r, jax.Array) else "numpy")
        return r

    loop._leaf = recording
    params = cascadexml.fit(X, Y, config, seed=0, texts=texts, progress=False, ckpt=ckpt,
                            mesh=mesh)
    loop._leaf = leaf
    top = cascadexml.predict(params, X, config, k=4, texts=texts, mesh=mesh)
    res = _flat({k_: params[k_] for k_ in ("encoder", "heads")}, "params/")
    res.update(ids=top.ids, scores=top.scores)
    np.savez(os.path.join(out, f"{ARGS.tag}{pid}.npz"), **res)
    with open(os.path.join(out, f"{ARGS.tag}{pid}.json"), "w") as f:
        json.dump({"process_count": jax.process_count(), "devices": len(jax.devices()),
                   "mesh": dict(mesh.shape), "resumed_from": start,
                   "latest": ckpt.latest_step(), "handed": sorted(set(handed))}, f)


def elmo(out: str) -> None:
    """(1) ELMO's flat head (:func:`jxmc.nn.flat_head.head_step_sharded`): two steps on
    three meshes against one device's :func:`head_step` (an f32 table without rounding,
    and a bf16 table with Kahan rows and stochastic rounding), the compiled sharded
    step's HLO and, as the control, XLA's own partitioning of the one-device step.
    (2) ``--method elmo`` fitted and predicted on ``data=2,model=2`` against one device
    (f32 table), one device's model predicted on that mesh, and the state's layouts."""
    from jxmc.models.transformer import elmo as E
    from jxmc.nn import flat_head as F
    from jxmc.nn.testing import tiny_encoder_dir, toy_texts

    rng = np.random.default_rng(0)
    n, L, h, m, chunk = 16, 500, 16, 3, 32
    e = [rng.normal(size=(n, h)).astype(np.float32) for _ in range(2)]
    pos = rng.integers(-1, L, size=(n, m)).astype(np.int32)
    valid = np.ones(n, bool)
    valid[-3:] = False
    res, info = {}, {"n": n, "h": h, "L": L, "chunk": chunk, "m": m, "meshes": {}}
    key = jax.random.PRNGKey(3)
    for dname in ("float32", "bfloat16"):
        dt = jnp.dtype(dname)
        cfg = E.Config(chunk=chunk, table_dtype=dname)
        rounding = "none" if dname == "float32" else "stochastic"
        lay = E.layout(L, cfg, 8)  # one layout for every mesh: the same rows
        w0 = np.random.default_rng(1).normal(size=(lay.Lp, h)) * 0.3
        bits = F.to_bits(jnp.asarray(w0, dt))
        state = (np.asarray(F.pack_kahan(bits[:lay.kc], F.to_bits(
            jnp.zeros((lay.kc, h), F.comp_dtype(dt))))) if lay.kc else None,
            np.asarray(bits[lay.kc:]))  # (an f32 table: no Kahan rows, no block)
        for spec in ("one", "data=2,model=4", "data=4,model=2") + (
                ("data=1,model=8",) if dname == "bfloat16" else ()):
            kw = dict(n_rows=L, chunk=lay.chunk, rounding=rounding, dtype=dt)
            if spec == "one":
                step = jax.jit(lambda w, e_, k, kw=kw: F.head_step(w, None, e_, pos, valid, 0.5,
                                                                   k, **kw)[:3])
                w = jax.tree_util.tree_map(jnp.asarray, state)
            else:
                mesh = S.mesh_from_string(spec)
                rules = ((r"^0$", jax.sharding.PartitionSpec(None, S.MODEL)),
                         (r"^1$", jax.sharding.PartitionSpec(S.MODEL)))
                w = S.shard_tree(state, mesh, rules)
                step = jax.jit(lambda w, e_, k, mesh=mesh, kw=kw: F.head_step_sharded(
                    w, e_, pos, valid, 0.5, k, mesh=mesh, **kw), donate_argnums=0)
                info["meshes"].setdefault(spec, {})
                if spec == "data=2,model=4" and dname == "bfloat16":
                    eb = jax.device_put(e[0], S.batch_sharding(mesh))
                    with open(os.path.join(out, "head-mesh.hlo.txt"), "w") as f:
                        f.write(step.lower(w, eb, key).compile().as_text())
                    # the control: XLA partitions the one-device step from the layouts
                    naive = jax.jit(lambda w, e_, k, kw=kw: F.head_step(w, None, e_, pos, valid,
                                                                        0.5, k, **kw)[:3])
                    with open(os.path.join(out, "head-xla.hlo.txt"), "w") as f:
                        f.write(naive.lower(w, eb, key).compile().as_text())
                    info["kc"], info["Lp"] = lay.kc, lay.Lp
            for i in range(2):
                loss, g_e, w = step(w, jnp.asarray(e[i]), jax.random.fold_in(key, i))
                res[f"{dname}/{spec}/loss{i}"] = np.asarray(loss)
                res[f"{dname}/{spec}/g_e{i}"] = np.asarray(S.to_host(g_e))
            kb, wp = S.to_host(w)
            res[f"{dname}/{spec}/wp"] = wp
            if kb is not None:
                res[f"{dname}/{spec}/kb"] = kb
            if spec != "one":
                info["meshes"][spec][dname] = [None if a is None else str(a.sharding.spec)
                                               for a in w]

    # (2) the method
    folder = tiny_encoder_dir(os.path.join(out, "enc"), words=32, layers=1, hidden=16,
                              max_len=16)
    texts, X, Y = toy_texts(48, 12, words=32, seed=0)
    config = E.Config(encoder=folder, pretrained=False, epochs=2, max_len=12, batch_size=16,
                      lr_encoder=1e-3, lr_head=0.5, dropout=0.0, chunk=4, table_dtype="float32",
                      predict_batch_size=16, predict_chunk=4)
    mesh = S.mesh_from_string("data=2,model=2", jax.devices()[:4])
    seen, train_step = [], S.shard_train_step

    def recording(step_fn, state, mesh):
        seen.append({S.path_name(p): str(a.sharding.spec)
                     for p, a in jax.tree_util.tree_leaves_with_path(state)
                     if S.path_name(p).startswith(("w/", "params/encoder/embeddings"))})
        return train_step(step_fn, state, mesh)

    S.shard_train_step = recording
    for where, mm in (("one", None), ("mesh", mesh)):
        params = E.fit(X, Y, config, seed=0, texts=texts, progress=False, mesh=mm)
        top = E.predict(params, X, config, k=4, texts=texts, mesh=mm)
        res[f"method/{where}/w"] = np.asarray(params["w"])
        res[f"method/{where}/ids"], res[f"method/{where}/scores"] = top.ids, top.scores
        if where == "one":
            top = E.predict(params, X, config, k=4, texts=texts, mesh=mesh)
            res["method/one-on-mesh/ids"], res["method/one-on-mesh/scores"] = top.ids, top.scores
    bf = E.Config(**{**config.__dict__, "table_dtype": "bfloat16", "dropout": 0.1})
    params = E.fit(X, Y, bf, seed=0, texts=texts, progress=False, mesh=mesh)
    S.shard_train_step = train_step
    info["method_layouts"] = seen  # the f32 fit's, then the bf16 fit's
    top = E.predict(params, X, bf, k=4, texts=texts, mesh=mesh)
    res["method/bf16-mesh/ids"], res["method/bf16-mesh/w"] = top.ids, np.asarray(
        params["w"]).astype(np.float32)
    np.savez(os.path.join(out, "elmo.npz"), **res)
    with open(os.path.join(out, "elmo.json"), "w") as f:
        json.dump(info, f)


def csr_to_ell_batch(Xb, z: int = 16):
    from jxmc.ops.sparse import csr_to_ell

    x = csr_to_ell(Xb, z)
    return np.asarray(x.indices), np.asarray(x.values)


if __name__ == "__main__":
    os.makedirs(ARGS.out, exist_ok=True)
    {"topk": topk, "step": step, "ckpt-save": ckpt_save, "ckpt-restore": ckpt_restore,
     "dist": dist, "xrl": xrl, "text": text, "transformer": transformer,
     "dist-text": dist_text, "elmo": elmo}[ARGS.scenario](ARGS.out)
    if ARGS.scenario in ("dist", "dist-text") and ARGS.num_processes > 1:
        jax.distributed.shutdown()
    sys.exit(0)

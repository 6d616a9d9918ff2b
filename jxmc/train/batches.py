"""Fixed-shape batches of token tables for the jitted train and predict steps.

A batch is ``{"ids": i32[n, s], "mask": i32[n, s], "pos": (i32[n, m_1], ...,
i32[n, m_D]), "valid": bool[n]}`` (``pos``: the positive nodes of each tree level,
:func:`jxmc.tree.shortlist.level_positives`, when the arrays have them); the last
batch of an epoch is padded with rows of point 0 marked ``valid = False``.  The
order of an epoch is a permutation seeded by ``(seed, epoch)``, so a resumed run
sees the same batches.
"""

from __future__ import annotations

import numpy as np


def batches(arrays: dict, batch_size: int, *, epoch: int | None, seed: int = 0):
    """Yields fixed-shape batches of ``arrays`` (``ids``, ``mask`` and optionally ``pos``).

    ``epoch=None`` keeps the order (prediction); otherwise a seeded shuffle.
    """
    n = arrays["ids"].shape[0]
    order = np.arange(n) if epoch is None else np.random.default_rng([seed, epoch]).permutation(n)
    for a in range(0, n, batch_size):
        idx = order[a:a + batch_size]
        valid = np.ones(batch_size, bool)
        if len(idx) < batch_size:
            valid[len(idx):] = False
            idx = np.concatenate([idx, np.zeros(batch_size - len(idx), idx.dtype)])
        batch = {"ids": arrays["ids"][idx], "mask": arrays["mask"][idx], "valid": valid}
        if "pos" in arrays:
            batch["pos"] = tuple(p[idx] for p in arrays["pos"])
        yield batch


def map_batches(fn, arrays: dict, batch_size: int):
    """``fn(batch)`` over the fixed-shape batches of ``arrays`` in order (prediction),
    each output's valid rows kept: the outputs' pytree (e.g. a :class:`jxmc.types.TopK`
    or one array, every leaf with a leading ``batch_size`` axis) with the leaves as
    numpy arrays of ``n`` rows, concatenated over the batches."""
    import jax  # the batches themselves need no JAX

    outs = [jax.tree_util.tree_map(lambda a, v=b["valid"]: np.asarray(a)[v], fn(b))
            for b in batches(arrays, batch_size, epoch=None)]
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *outs)

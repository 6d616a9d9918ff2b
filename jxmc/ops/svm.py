"""Many small L2-regularised squared-hinge SVMs solved at once (truncated Newton).

The rankers of one tree level are independent one-vs-rest problems, one per
(parent ``u``, child ``c``): ``min_w 0.5 ||w||^2 + cost sum_i max(0, 1 - y_i w.x_i)^2``
over the instances paired with ``u`` (liblinear's ``L2R_L2LOSS_SVC`` with
``Cp = Cn = cost``; PECOS solves its dual by coordinate descent, we solve the primal).
All children of a parent share its instances, so the problems are laid out as

* ``W: f32[S + 1, B]``: one row per *slot*, a (parent, feature) pair of the
  parent's feature support, one column per child; row ``S`` is inert padding;
* entries ``(slot, val, pair): i32[E], f32[E], i32[E]``: the non-zeros of each
  (instance, parent) pair's feature row, mapped to the parent's slots
  (padding ``(S, 0.0, P)``);
* ``y, mask: f32[P + 1, B]`` targets (+-1) and weights (0 on dummy children).

``X w`` and ``X^T r`` are gathers and scatter-adds over the entries, scanned in
blocks of ``block`` entries to bound the ``[block, B]`` temporaries; their cost
is ``E * B``, i.e. proportional to (instance, candidate node) pairs times
non-zeros, never to ``d * L``.

Truncated Newton (Lin, Weng & Keerthi, "Trust region Newton method for
large-scale logistic regression", JMLR 2008; Keerthi & DeCoste 2005 for the
squared hinge): ``newton_iters`` outer steps, each solving
``(I + 2C X_A^T X_A) s = -g`` by ``cg_iters`` steps of diagonally
preconditioned conjugate gradients (every problem has its own step sizes; the
inner products are segment sums over the slots of a parent; the diagonal is
that of the first step, where every pair is active), then an exact line
search along ``s`` (a piecewise-quadratic in one variable: a few 1-D Newton steps
on the cached margins ``X w`` and ``X s``).  Fixed iteration counts keep the
shapes and the program static.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _xv(W, slot, val, pair, n_pairs: int, block: int):
    """``f32[P + 1, B]`` margins ``X W`` (entries scanned in blocks)."""
    B = W.shape[1]
    nb = slot.shape[0] // block

    def body(acc, xs):
        s, v, p = xs
        return acc.at[p].add(v[:, None] * W[s]), None

    acc = jnp.zeros((n_pairs, B), W.dtype)
    xs = (slot.reshape(nb, block), val.reshape(nb, block), pair.reshape(nb, block))
    return jax.lax.scan(body, acc, xs)[0]


def _xtr(R, slot, val, pair, n_slots: int, block: int):
    """``f32[S + 1, B]`` back-projection ``X^T R``."""
    B = R.shape[1]
    nb = slot.shape[0] // block

    def body(acc, xs):
        s, v, p = xs
        return acc.at[s].add(v[:, None] * R[p]), None

    acc = jnp.zeros((n_slots, B), R.dtype)
    xs = (slot.reshape(nb, block), val.reshape(nb, block), pair.reshape(nb, block))
    return jax.lax.scan(body, acc, xs)[0]


@functools.partial(jax.jit, static_argnames=("n_parents", "newton_iters", "cg_iters", "block",
                                             "slot_block"))
def solve_squared_hinge(slot, val, pair, y, mask, slot_parent, pair_parent, *, cost: float,
                        n_parents: int, newton_iters: int = 3, cg_iters: int = 5,
                        block: int = 1 << 16, slot_block: int = 1):
    """Solves every (parent, child) problem of one chunk.

    Args:
      slot, val, pair: the entries (``i32[E]``, ``f32[E]``, ``i32[E]``), ``E`` a
        multiple of ``block``.
      y, mask: ``f32[P + 1, B]`` targets (+-1) and weights (0 or 1).
      slot_parent: ``i32[S + 1]`` the (chunk-local) parent of each slot; with
        ``slot_block = R > 1`` every run of ``R`` slots belongs to one parent
        (pad each parent's slots to a multiple of ``R`` with inert slots) and
        ``S + 1`` is a multiple of ``R``: the per-problem inner products then
        sum blocks of ``R`` rows before a ``R`` times smaller segment sum.
      pair_parent: ``i32[P + 1]`` the (chunk-local) parent of each pair.
      cost: the loss weight (liblinear's ``C``).

    Returns:
      ``W: f32[S + 1, B]`` (row ``S`` is zero).
    """
    n_pairs, B = y.shape
    n_slots = slot_parent.shape[0]
    xv = functools.partial(_xv, slot=slot, val=val, pair=pair, n_pairs=n_pairs, block=block)
    xtr = functools.partial(_xtr, slot=slot, val=val, pair=pair, n_slots=n_slots, block=block)
    sq = functools.partial(_xtr, slot=slot, val=val * val, pair=pair, n_slots=n_slots, block=block)

    block_parent = slot_parent[::slot_block]

    def wdot(a, b):  # per-problem inner product over slots: [n_parents, B]
        ab = (a * b).reshape(n_slots // slot_block, slot_block, B).sum(axis=1)
        return jax.ops.segment_sum(ab, block_parent, num_segments=n_parents)

    def pdot(a):  # per-problem sum over pairs: [n_parents, B]
        return jax.ops.segment_sum(a, pair_parent, num_segments=n_parents)

    def per_slot(x):
        return x[slot_parent]

    def safe_div(a, b):
        return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)

    dg = 1.0 + 2.0 * cost * sq(mask)  # Jacobi preconditioner at W = 0, kept for every step

    def newton_step(_, state):
        W, m = state
        act = mask * (y * m < 1.0)
        g = W + 2.0 * cost * xtr(act * (m - y))

        def cg_step(_, cg):
            s, r, d, rz = cg
            hd = d + 2.0 * cost * xtr(act * xv(d))
            alpha = safe_div(rz, wdot(d, hd))
            s = s + per_slot(alpha) * d
            r = r - per_slot(alpha) * hd
            z = r / dg
            rz_new = wdot(r, z)
            return s, r, z + per_slot(safe_div(rz_new, rz)) * d, rz_new

        r = -g
        z = r / dg
        s, _, _, _ = jax.lax.fori_loop(0, cg_iters, cg_step, (jnp.zeros_like(W), r, z, wdot(r, z)))
        ms = xv(s)
        ws, ss = wdot(W, s), wdot(s, s)

        def line_step(_, t):  # 1-D Newton on the piecewise quadratic f(w + t s)
            mt = m + t[pair_parent] * ms
            a = mask * (y * mt < 1.0)
            d1 = ws + t * ss + 2.0 * cost * pdot(a * (mt - y) * ms)
            d2 = ss + 2.0 * cost * pdot(a * ms * ms)
            return t - safe_div(d1, d2)

        t = jax.lax.fori_loop(0, 4, line_step, jnp.ones((n_parents, B), jnp.float32))
        return W + per_slot(t) * s, m + t[pair_parent] * ms

    W, _ = jax.lax.fori_loop(0, newton_iters, newton_step,
                             (jnp.zeros((n_slots, B), jnp.float32),
                              jnp.zeros((n_pairs, B), jnp.float32)))
    return W.at[-1].set(0.0)

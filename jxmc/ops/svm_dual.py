"""Many L2-loss SVMs solved at once by dual coordinate descent, in lock step.

The rankers of one tree level are independent one-vs-rest problems, one per
(parent ``u``, child ``c``):

    min_w  0.5 ||w||^2 + cost sum_i max(0, 1 - y_i w.x_i)^2

over the instances paired with ``u`` (liblinear's ``L2R_L2LOSS_SVC_DUAL``, the
solver of PECOS's XR-Linear).  Its dual (Hsieh, Chang, Lin, Keerthi &
Sundararajan, "A dual coordinate descent method for large-scale linear SVM",
ICML 2008, Algorithm 1 with upper bound ``inf`` and ``D_ii = 1 / (2C)``) is
solved one dual variable at a time: for instance ``i``,

    G = y_i w.x_i - 1 + alpha_i / (2C)
    alpha_i <- max(alpha_i - G / Q_ii, 0),   Q_ii = x_i.x_i + 1 / (2C)
    w <- w + (alpha_i^new - alpha_i^old) y_i x_i

What makes this XLA-friendly:

* all ``B`` children of a parent train on the same instances, so one step
  updates an instance's dual variables of every child at once: a gather of the
  weight rows ``W[slots of x_i]: f32[z, B]``, ``B`` margins, ``B`` closed-form
  updates and a scatter-add back;
* problems of different parents touch disjoint weights, so ``U`` *lanes* run
  side by side: a lane is a sequence of whole parents (packed longest first),
  and a step advances every lane by one instance (``f32[U, z, B]``), so the
  result is that of sequential dual coordinate descent on every problem.  On a
  CPU one lane is the fast case (XLA compiles its reads to dynamic slices, 16
  gathers for two lanes: on debtags' widest level a step of one lane takes 16 us,
  one of two 42 us), so there :func:`jxmc.models.tree_linear.rankers.choose_lanes` mostly picks
  one lane and runs chunks side by side on the cores instead;
* an instance's row is stored as *pieces* of ``z`` non-zeros and a step loops
  over the pieces of its lanes' rows, so one compiled step serves rows of any
  length; every epoch each lane visits its instances in a fresh random order
  (liblinear shuffles every epoch; a fixed or length-sorted order converges
  markedly slower: on debtags 8 epochs in random order reach the P@1 that 20
  epochs of a length-sorted order do not).

A level's cost is set by its longest parent (its instances are visited one
after another); spreading a parent over several lanes (concurrent updates of
shared weights, as in PASSCoDe, Hsieh, Yu & Dhillon, ICML 2015) diverged here:
every row shares the bias feature, so simultaneous updates overshoot.

liblinear's stopping rule: the projected-gradient range ``max PG - min PG`` over
an epoch; a chunk stops when it is ``<= eps`` for every child over each lane's
instances (which bounds it for every problem of the lane: at least as strict as
liblinear's per-problem rule) or after ``max_epochs``.  Its shrinking is left out: it cannot skip
work in lock step, where a row is skipped only if every child's variable is settled (on
debtags' widest level, 0.4% of the rows at the solution, although 79% of the (row, child)
variables are 0).

Layout of one chunk (:func:`chunk_layout`, host side):

* ``W: f32[S, B]``: one row per *slot*, a (parent, feature) pair of a parent's
  feature support; row ``S - 1`` is inert padding;
* pieces ``idx: i32[Q + 1, z]`` (slot ids) and ``val: f32[Q + 1, z]`` (values),
  padding ``(S - 1, 0.0)``; piece ``Q`` is inert;
* rows ``first, count: i32[P + 1]`` (each row's pieces), ``y, mask: f32[P + 1,
  B]`` targets (+-1) and weights (0 for padding children and for the inert row
  ``P``), ``sqnorm: f32[P + 1]`` each row's ``x_i.x_i`` (summed on the host: computed
  in the program it was a third of its compile time);
* the lanes ``sched: i32[T, U]`` (rows; ``P`` = nothing to do).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# primes above any lane length (< 2^31): a stride p mod n is coprime to n
_PRIMES = (2147483647, 2147483629, 2147483587, 2147483579, 2147483563, 2147483549, 2147483543,
           2147483497, 2147483489, 2147483477, 2147483423, 2147483399, 2147483353, 2147483323,
           2147483269, 2147483249)


def _get(a, i, unique: bool = False):
    """``a[i]`` without XLA's out-of-bounds handling (every index here is in bounds)."""
    return a.at[i].get(mode="promise_in_bounds", unique_indices=unique)


class Chunk(NamedTuple):
    """One chunk's arrays (module docstring); numpy on the host, jax on device."""

    idx: np.ndarray  # i32[Q + 1, z]
    val: np.ndarray  # f32[Q + 1, z]
    first: np.ndarray  # i32[P + 1]
    count: np.ndarray  # i32[P + 1]
    y: np.ndarray  # f32[P + 1, B]
    mask: np.ndarray  # f32[P + 1, B]
    sched: np.ndarray  # i32[T + 1, U]
    length: np.ndarray  # i32[U]
    sqnorm: np.ndarray  # f32[P + 1] x_i.x_i of each row (0 for the inert row)


def assign_lanes(sizes: np.ndarray, n_lanes: int) -> np.ndarray:
    """Longest-processing-time packing: the lane of each item, ``i32[K]``.

    Items go largest first to the least loaded lane, so no lane is longer than
    ``max(sizes) + sum(sizes) / n_lanes``.
    """
    lane = np.zeros(len(sizes), np.int32)
    load = np.zeros(n_lanes, np.int64)
    for k in np.argsort(-np.asarray(sizes), kind="stable"):
        j = int(np.argmin(load))
        lane[k] = j
        load[j] += sizes[k]
    return lane


def row_pieces(nnz: np.ndarray, width: int) -> np.ndarray:
    """Pieces of ``width`` non-zeros per row (at least one): ``i64[P]``."""
    return np.maximum(-(-np.asarray(nnz, np.int64) // width), 1)


def lane_steps(sizes: np.ndarray, n_lanes: int) -> int:
    """The longest lane, in rows, when parents of ``sizes`` rows are packed into
    ``n_lanes`` lanes (:func:`assign_lanes`): a chunk's ``sched`` has one more row."""
    sizes = np.asarray(sizes, np.int64)
    lane = assign_lanes(sizes, n_lanes)
    return int(np.bincount(lane, weights=sizes, minlength=n_lanes).max(initial=0))


def chunk_layout(slot: np.ndarray, val: np.ndarray, pair: np.ndarray, pair_parent: np.ndarray,
                 y: np.ndarray, mask: np.ndarray, n_slots: int, *, n_lanes: int,
                 width: int, seed: int = 0) -> Chunk:
    """The arrays of one chunk (host side, numpy).

    Args:
      slot, val, pair: ``i32[E], f32[E], i32[E]`` the chunk's feature entries
        (chunk-local slot and pair ids), sorted by pair.
      pair_parent: ``i32[P]`` the chunk-local parent of each pair, ascending.
      y, mask: ``f32[P, B]`` the pairs' targets and weights.
      n_slots: ``S``, slots of the chunk including the padding slot ``S - 1``.
      n_lanes: ``U``.
      width: ``z``, non-zeros per piece.
      seed: seeds the lanes' base orders.
    """
    rng = np.random.default_rng(seed)
    P, B = y.shape
    nnz = np.bincount(pair, minlength=P)
    count = row_pieces(nnz, width)
    first = np.concatenate([[0], np.cumsum(count)])
    Q = int(first[-1])
    start = np.concatenate([[0], np.cumsum(nnz)])
    pos = np.arange(len(pair)) - start[pair]
    idx = np.full((Q + 1, width), n_slots - 1, np.int32)
    vv = np.zeros((Q + 1, width), np.float32)
    piece = first[pair] + pos // width
    idx[piece, pos % width] = slot
    vv[piece, pos % width] = val
    lane = assign_lanes(np.bincount(pair_parent), n_lanes)[pair_parent]
    per_lane = np.bincount(lane, minlength=n_lanes)
    # each lane's rows in a random order (every epoch then walks it with a random stride)
    order = np.lexsort((rng.random(P), lane))
    step = np.arange(P) - np.repeat(np.cumsum(per_lane) - per_lane, per_lane)
    sched = np.full((int(per_lane.max(initial=0)) + 1, n_lanes), P, np.int32)
    sched[step, lane[order]] = order
    pad = np.zeros((1, B), np.float32)
    sqnorm = np.bincount(pair, weights=np.square(val, dtype=np.float64), minlength=P)
    return Chunk(idx, vv, np.append(first[:-1], Q).astype(np.int32),
                 np.append(count, 1).astype(np.int32), np.vstack([y, pad]),
                 np.vstack([mask, pad]), sched, per_lane.astype(np.int32),
                 np.append(sqnorm, 0.0).astype(np.float32))


def pad_chunk(c: Chunk, *, n_slots: int, rows: int, pieces: int, steps: int) -> Chunk:
    """Pads a chunk to common shapes (one compilation serves every chunk of a level).

    ``steps`` is the longest lane of any chunk; the inert row, piece and slot
    move to the new last positions.
    """
    P, Q = c.y.shape[0] - 1, c.idx.shape[0] - 1
    idx = np.full((pieces + 1, c.idx.shape[1]), n_slots - 1, np.int32)
    idx[:Q] = np.where(c.idx[:Q] == c.idx[Q, 0], n_slots - 1, c.idx[:Q])
    val = np.zeros((pieces + 1, c.val.shape[1]), np.float32)
    val[:Q] = c.val[:Q]

    def rows_of(a, fill):
        out = np.full((rows + 1,) + a.shape[1:], fill, a.dtype)
        out[:P] = a[:P]
        return out

    first = rows_of(c.first, pieces)
    count = rows_of(c.count, 1)
    sched = np.full((steps + 1, c.sched.shape[1]), rows, np.int32)
    sched[: c.sched.shape[0]] = np.where(c.sched == P, rows, c.sched)
    return Chunk(idx, val, first, count, rows_of(c.y, 0.0), rows_of(c.mask, 0.0), sched, c.length,
                 rows_of(c.sqnorm, 0.0))


def epoch_walks(length: np.ndarray, epochs: int, seed: int) -> np.ndarray:
    """Each lane's walk over its rows in every epoch: ``i32[epochs, 2, U]``, the
    stride (``[:, 0]``, coprime to the lane's length) and the start (``[:, 1]``).

    Drawn on the host (numpy, from ``seed``), so that the solver's program holds no
    random number generator (a quarter of its compile time).
    """
    rng = np.random.default_rng(seed)
    n = np.maximum(np.asarray(length, np.int64), 1)
    primes = np.asarray(_PRIMES, np.int64)
    stride = primes[rng.integers(0, len(primes), (epochs, len(n)))] % n
    start = rng.integers(0, n, (epochs, len(n)))
    return np.stack([stride, start], axis=1).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("n_slots",))
def solve_dual_cd(chunk: Chunk, walks, max_epochs, *, cost, eps, n_slots: int):
    """Solves every (parent, child) problem of one chunk.

    Args:
      chunk: a :class:`Chunk` (jax or numpy arrays).
      walks: ``i32[E, 2, U]`` the per-epoch orders (:func:`epoch_walks`).
      max_epochs: ``i32[]`` passes over the data at most (``<= E``).
      cost: the loss weight (liblinear's ``C``; PECOS ``Cp = Cn = 1``).
      eps: stop once every problem's projected-gradient range over an epoch is
        ``<= eps`` (liblinear's ``eps``; PECOS 0.1).
      n_slots: ``S``, rows of ``W`` (the last one is padding).

    Returns:
      ``(W: f32[S, B], epochs: i32[])``; row ``S - 1`` of ``W`` is zero.
    """
    idx, val, first, count, y, mask, sched, length, sqnorm = chunk
    B = y.shape[1]
    Q = idx.shape[0] - 1
    T = sched.shape[0] - 1  # row T of sched is inert
    inv2c = 0.5 / cost
    qd = sqnorm + inv2c
    live = mask > 0

    lanes = jnp.arange(sched.shape[1])

    def step(t, state, stride):
        W, alpha, hi, lo, pos = state
        r = sched.at[jnp.where(t < length, pos, T), lanes].get(mode="promise_in_bounds")  # [U]
        f, c = _get(first, r), _get(count, r)

        def piece(j):
            return jnp.where(j < c, f + j, Q)

        def margin(j, carry):
            q = piece(j)
            m, a = carry
            # the old dual values are read inside the loop, so that they are
            # materialised before alpha is updated in place (read outside, XLA
            # fuses the read into several consumers and copies alpha every step)
            a = jnp.where(j == 0, _get(alpha, r), a)
            return m + jnp.einsum("uz,uzb->ub", _get(val, q), _get(W, _get(idx, q), True)), a

        n_pieces = jnp.max(c)
        zeros = jnp.zeros((r.shape[0], B), W.dtype)
        # piece 0 outside the loops: most rows have one piece (every row has >= 1)
        m, a = jax.lax.fori_loop(1, n_pieces, margin, margin(0, (zeros, zeros)))
        yy, mm = _get(y, r), _get(live, r)
        G = yy * m - 1.0 + a * inv2c
        new = jnp.where(mm, jnp.maximum(a - G / _get(qd, r)[:, None], 0.0), a)
        d = (new - a) * yy

        def update(j, W):
            q = piece(j)
            # the slots of one step are distinct but for the padding slot S - 1, whose
            # updates are all 0 (so that XLA may scatter without ordering them)
            return W.at[_get(idx, q)].add(_get(val, q)[:, :, None] * d[:, None, :],
                                          mode="promise_in_bounds", unique_indices=True)

        W = jax.lax.fori_loop(1, n_pieces, update, update(0, W))
        g = jnp.where(a > 0, G, jnp.minimum(G, 0.0))  # projected gradient
        hi = jnp.maximum(hi, jnp.where(mm, g, -jnp.inf))
        lo = jnp.minimum(lo, jnp.where(mm, g, jnp.inf))
        pos = (pos + stride) % jnp.maximum(length, 1)
        # the lanes' rows are distinct but for the inert row P, which keeps its value
        alpha = alpha.at[r].set(new, mode="promise_in_bounds", unique_indices=True)
        return W, alpha, hi, lo, pos

    def epoch(state):
        W, alpha, e, _ = state
        # a fresh order every epoch (liblinear shuffles): each lane walks its rows from a
        # random start with a random stride coprime to its length (a prime mod it)
        stride, start = walks[e, 0], walks[e, 1]
        U = sched.shape[1]
        hi = jnp.full((U, B), -jnp.inf, W.dtype)
        lo = jnp.full((U, B), jnp.inf, W.dtype)
        W, alpha, hi, lo, _ = jax.lax.fori_loop(0, jnp.max(length),
                                                functools.partial(step, stride=stride),
                                                (W, alpha, hi, lo, start))
        # the range over a lane bounds that of every problem in the lane
        gap = jnp.where(jnp.isfinite(hi) & jnp.isfinite(lo), hi - lo, 0.0)
        return W, alpha, e + 1, jnp.max(gap)

    def more(state):
        return (state[2] < jnp.minimum(max_epochs, walks.shape[0])) & (state[3] > eps)

    W = jnp.zeros((n_slots, B), jnp.float32)
    alpha = jnp.zeros(y.shape, jnp.float32)
    W, _, epochs, _ = jax.lax.while_loop(
        more, epoch, (W, alpha, jnp.int32(0), jnp.float32(jnp.inf)))
    return W.at[-1].set(0.0), epochs

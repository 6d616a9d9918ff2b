"""The rankers of one label-tree level: one-vs-rest squared-hinge SVMs, sparse.

Level ``l`` of a tree has one binary problem per (parent ``u`` at level
``l - 1``, child ``c``), trained on the (instance, parent) pairs that the
matching matrix ``M`` chooses (:func:`jxmc.tree.shortlist.training_pairs`: TFN,
optionally MAN).  :func:`train_level` builds every parent's feature support
(its *slots*, :mod:`jxmc.ops.sparse_weights`), solves all problems in chunks of
parents, drops weights under ``threshold`` (PECOS's 0.1) and returns the level
in its compressed form (:func:`jxmc.ops.sparse_weights.assemble_level`).

Two solvers of the same problem (``L2R_L2LOSS_SVC``, ``Cp = Cn = cost``):

* ``"dual-cd"`` (default): PECOS's own algorithm, dual coordinate descent, every
  parent's instances in sequence and the parents in lanes side by side
  (:mod:`jxmc.ops.svm_dual`); it reaches PECOS's accuracy on ../shared/data
  (experiments/results/).  Its cost is set by the longest parent's instances,
  visited one after another, which suits a CPU.  On a CPU the lanes per chunk come
  from a measured cost model (:func:`choose_lanes`; XLA compiles one lane's reads
  to slices, several lanes' to gathers, 2.6x dearer a step on debtags), and the
  chunks of one lane hold parents one after another.
* ``"newton"``: truncated Newton with conjugate gradients on the primal
  (:mod:`jxmc.ops.svm`): every problem and every instance at once, a fixed number
  of steps -- the shape of work an accelerator wants; it needs about ten Newton
  steps of twenty CG steps to match dual CD's accuracy.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import NamedTuple

import jax
import numpy as np
import scipy.sparse as sp

from jxmc.ops import sparse_weights as sw
from jxmc.ops import svm_dual
from jxmc.ops.ids import pow2
from jxmc.ops.svm import solve_squared_hinge
from jxmc.tree.label_tree import LabelTree
from jxmc.tree.shortlist import pair_targets, training_pairs

SOLVERS = ("dual-cd", "newton")


class Options(NamedTuple):
    """How the rankers of a level are solved (the fields of
    :class:`jxmc.models.tree_linear.xr_linear.Config` of the same names)."""

    solver: str = "dual-cd"  # "dual-cd" or "newton" (module docstring)
    cost: float = 1.0  # squared-hinge loss weight, liblinear's C (PECOS Cp = Cn = 1)
    threshold: float = 0.1  # weights with |w| below this are dropped (PECOS 0.1)
    eps: float = 0.1  # dual-cd: stop at this projected-gradient range (liblinear / PECOS 0.1)
    max_epochs: int = 20  # dual-cd: passes over the instances at most
    lanes: int = 16  # dual-cd: parents solved side by side
    piece_width: int = 0  # dual-cd: non-zeros gathered per step and lane; 0 = from the data
    newton_iters: int = 10  # newton: outer steps
    cg_iters: int = 20  # newton: conjugate-gradient steps per outer step
    chunk_weights: int = 1 << 25  # floats of weights solved at once (memory bound)


def piece_width(nnz: np.ndarray) -> int:
    """A power of two that holds 3/4 of the rows in one piece, in ``16 .. 128``."""
    p75 = max(float(np.percentile(nnz, 75)), 1.0)
    return int(min(128, max(16, 1 << int(np.ceil(np.log2(p75))))))


def train_level(Xb: sp.csr_matrix, Y: sp.csr_matrix, tree: LabelTree, level: int,
                options: Options | None = None, *, beam_parents=None, seed: int = 0,
                devices=None, pool=None) -> dict:
    """Trains the rankers of ``level`` (``1 .. D``).

    Args:
      Xb: ``csr f32[n, d + 1]`` features with the bias column
        (:func:`jxmc.ops.sparse.add_bias`).
      Y: ``csr f32[n, L]`` positives.
      tree: the label tree.
      options: :class:`Options` (default: ``Options()``).
      beam_parents: ``i32[n, b]`` level ``level - 1`` nodes kept by the beam, for
        MAN pairs (``None``: TFN only).
      seed: seeds dual-cd's per-epoch shuffles.
      devices: where dual-cd runs its chunks side by side (default
        ``jax.local_devices()``; a mesh's: :func:`jxmc.models.tree_linear.mesh.solver_devices`);
        the result does not depend on them.  Newton runs on the default device.
      pool: a :class:`DevicePool` to share with other levels trained at the same
        time (default: one over ``devices`` for this call).

    Returns:
      the level's arrays (:func:`jxmc.ops.sparse_weights.assemble_level`).

    Raises:
      ValueError: an unknown solver.
    """
    options = Options() if options is None else options
    if options.solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {options.solver!r}")
    B = tree.branching[level - 1]
    n_parents = int(np.prod(tree.branching[: level - 1]))
    inst, parent = training_pairs(Y, tree, level, beam_parents=beam_parents)
    y, mask = pair_targets(Y, tree, level, inst, parent)
    A = sw.parent_supports(Xb, inst, parent, n_parents)
    slot, val, pair = sw.pair_entries(Xb, A, inst, parent)
    s_par = np.diff(A.indptr)
    p_par = np.bincount(parent, minlength=n_parents)
    e_par = np.bincount(parent[pair], minlength=n_parents)
    off = {"s": _offsets(s_par), "p": _offsets(p_par), "e": _offsets(e_par)}
    # a list, so that the solver can drop the entries once it has laid them out
    data = [slot, val, pair, parent, y, mask]
    del inst, slot, val, pair, y, mask
    if options.solver == "dual-cd":
        solved = _dual_cd(data, off, s_par, p_par, options, np.diff(Xb.indptr), level + seed,
                          devices=devices, pool=pool)
    else:
        solved = _newton(data, off, s_par, p_par, e_par, options, B)
    parts = []
    for ps, W in solved:
        keep, counts, children, values = sw.compress_rows(W, options.threshold)
        slot_parent = np.repeat(ps.astype(np.int32), s_par[ps])
        parts.append((slot_parent[keep], A.indices[_ranges(off["s"], ps)][keep], counts,
                      children, values))
    return sw.assemble_level(_by_parent(parts), n_parents, B)


def _by_parent(parts):
    """One part with the slots of every part in parent order (chunks may interleave parents)."""
    par, feats, counts, children, values = (np.concatenate([p[i] for p in parts])
                                            for i in range(5))
    order = np.argsort(par, kind="stable")  # within a parent, slots stay sorted by feature
    ptr = np.concatenate([[0], np.cumsum(counts)])
    take = _ranges(ptr, order)
    return [(par[order], feats[order], counts[order], children[take], values[take])]


def _offsets(sizes: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)])


def _ranges(off: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Indices of the concatenated ranges ``off[u] .. off[u + 1]`` of ``parents``."""
    lo, n = off[parents], off[parents + 1] - off[parents]
    return np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(n.sum())


def plan_balanced(pairs: np.ndarray, slots: np.ndarray, *, n_lanes: int, slot_limit: int,
                  min_length: int = 0):
    """Groups parents into chunks whose lanes take about the same time.

    An epoch of a chunk lasts as long as its longest lane, so the parents are
    taken largest first: a chunk opens with the largest parent left, which sets
    its length (at least ``min_length`` pairs), and takes further parents into its
    least-loaded lane while they fit in that length and the chunk's slots stay
    within ``slot_limit``.

    Returns:
      a list of ``i64[k]`` parent ids (ascending) per chunk.
    """
    chunks, cur, load, used, length = [], [], None, 0, 0
    for u in np.argsort(-pairs, kind="stable"):
        j = None if load is None else int(np.argmin(load))
        if j is None or load[j] + pairs[u] > length or used + slots[u] + 1 > slot_limit:
            if cur:
                chunks.append(np.sort(np.asarray(cur)))
            cur, load, used, j = [], np.zeros(n_lanes, np.int64), 0, 0
            length = max(int(pairs[u]), int(min_length))
        cur.append(u)
        load[j] += pairs[u]
        used += slots[u] + 1
    chunks.append(np.sort(np.asarray(cur)))
    return chunks


PLAN_DEVICES = 2  # dual-cd: devices a level's plan is made for (the result does not depend on
# the devices it runs on)
PLAN_CHUNKS = 8  # dual-cd: chunks a level of one-lane chunks is cut into (at most, as they fit)


def step_us(n_lanes: int, width: int, B: int) -> float:
    """Microseconds of one dual-CD step of ``n_lanes`` lanes on a CPU core (XLA CPU,
    measured on a 2-core AMD EPYC with jax 0.10.2, ``width = 128``, ``B`` = 8 and 75).

    One lane is the fast case: its per-row reads are dynamic slices, not gathers
    (about 4.4 us plus 1.25 ns per gathered weight); several lanes cost about
    8 + 2 U us plus 1.6 ns per weight, so that on a CPU a lane of its own is as
    cheap per row as 16 lanes side by side for ``B = 75`` and about 1.4x dearer
    for ``B = 8``.
    """
    if n_lanes == 1:
        return 4.4 + 0.00125 * width * B
    return 8.0 + 2.0 * n_lanes + 0.0016 * n_lanes * width * B


def choose_lanes(pairs: np.ndarray, width: int, B: int, n_devices: int, max_lanes: int) -> int:
    """Lanes per chunk (``1 .. max_lanes``, powers of two) with the shortest estimated level.

    A level lasts at least as long as its largest parent, whose instances are
    visited in sequence at one step each, and at least its total steps spread over
    the devices: the estimate is the larger of the two (:func:`step_us`).
    """
    total, longest = float(pairs.sum()), float(max(pairs.max(initial=0), 1))
    best, best_t = 1, None
    U = 1
    while U <= max(1, max_lanes):
        c = step_us(U, width, B)
        t = max(longest * c, total / U * c / max(1, n_devices))
        if best_t is None or t < best_t:
            best, best_t = U, t
        U *= 2
    return best


def _dual_cd(data, off, s_par, p_par, options: Options, row_nnz, seed: int, devices=None,
             pool=None):
    """Yields ``(parents, W: f32[slots of parents, B])`` per chunk of parents, in the
    order the chunks finish."""
    slot, val, pair, parent, y, mask = data
    B = y.shape[1]
    s_off, p_off, e_off = off["s"], off["p"], off["e"]
    own = pool is None
    pool = DevicePool(devices) if own else pool
    width = options.piece_width or piece_width(row_nnz)
    # lanes beyond (pairs / longest parent) would not shorten an epoch, only pad its steps
    most = max(1, min(options.lanes, -(-int(p_par.sum()) // max(int(p_par.max()), 1))))
    on_cpu = all(d.platform == "cpu" for d in pool.devices)
    # planned for PLAN_DEVICES whatever the devices, so that the model does not
    # depend on the machine (only the CPU's cost model picks the lanes)
    n_lanes = choose_lanes(p_par, width, B, PLAN_DEVICES, most) if on_cpu else most
    # chunks bound the weights solved at once; every parent fits in one.  A chunk of
    # one lane takes parents one after another, PLAN_CHUNKS chunks a level or fewer
    limit = max(options.chunk_weights // B, int(s_par.max()) + 2)
    min_length = -(-int(p_par.sum()) // PLAN_CHUNKS) if n_lanes == 1 else 0
    plan = plan_balanced(p_par, s_par, n_lanes=n_lanes, slot_limit=limit, min_length=min_length)
    # one padded shape per level, known before any chunk is laid out: one compilation
    # serves every chunk, and the first chunks are solved while the next are laid out
    pair_pieces = svm_dual.row_pieces(np.bincount(pair, minlength=len(parent)), width)
    piece_par = np.bincount(parent, weights=pair_pieces, minlength=len(s_par)).astype(np.int64)
    caps = dict(n_slots=max(int(s_par[ps].sum()) for ps in plan) + 1,
                rows=max(int(p_par[ps].sum()) for ps in plan),
                pieces=max(int(piece_par[ps].sum()) for ps in plan),
                steps=max(svm_dual.lane_steps(p_par[ps], n_lanes) for ps in plan) + 1)
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, len(plan))
    # a chunk's cost (us): its steps (the longest lane) times a step's, every epoch;
    # the level's chunks share one program (one compilation per device)
    step_cost = step_us(n_lanes, width, B) * options.max_epochs
    program = ("dual-cd", n_lanes, width, B, options.max_epochs, tuple(sorted(caps.items())))
    # chunks run side by side on the backend's devices (the host's cores, jxmc.devices)
    # or a mesh's, each on the device where it would finish first (levels trained at
    # once share the pool); the plan and the seeds do not depend on the devices, so
    # neither does the result
    futures = {}
    try:
        for i, ps in enumerate(plan):
            es, pr = _ranges(e_off, ps), _ranges(p_off, ps)
            local = np.zeros(len(s_par), np.int64)
            local[ps] = np.arange(len(ps))
            s_base = np.zeros(len(s_par), np.int64)
            s_base[ps] = np.concatenate([[0], np.cumsum(s_par[ps])[:-1]])
            p_base = np.zeros(len(s_par), np.int64)
            p_base[ps] = np.concatenate([[0], np.cumsum(p_par[ps])[:-1]])
            eu = parent[pair[es]]  # the parent of each entry
            c = svm_dual.chunk_layout(
                slot[es] - s_off[eu] + s_base[eu], val[es], pair[es] - p_off[eu] + p_base[eu],
                local[parent[pr]].astype(np.int32), y[pr], mask[pr], int(s_par[ps].sum()) + 1,
                n_lanes=n_lanes, width=width, seed=seed + i)
            fn = functools.partial(_solve_chunk, c, int(seeds[i]), caps, options)
            futures[pool.submit(c.sched.shape[0] * step_cost, fn, program=program)] = ps
            del c, fn, es, pr, eu
        # the chunks hold their own copies of the entries: free the level's (memory peak)
        del slot, val, pair, parent, y, mask
        data.clear()
        # in the order they finish, so that no finished chunk's weights wait in memory
        # behind a longer one (the caller's result does not depend on the order)
        for fut in as_completed(futures):
            ps = futures.pop(fut)
            yield ps, fut.result()[: int(s_par[ps].sum())]
    finally:
        if own:
            pool.shutdown()


def _solve_chunk(chunk, seed: int, caps, options: Options, device) -> np.ndarray:
    walks = svm_dual.epoch_walks(chunk.length, options.max_epochs, seed)
    arrays = jax.device_put((svm_dual.pad_chunk(chunk, **caps), walks), device)
    W, _ = svm_dual.solve_dual_cd(*arrays, options.max_epochs, cost=options.cost,
                                  eps=options.eps, n_slots=int(caps["n_slots"]))
    return np.asarray(W)


class DevicePool:
    """Runs work on devices, one item at a time per device, each item on the device
    with the least estimated work queued or running, counting a compilation for a
    program the device has not run yet.

    Levels trained at the same time (:func:`jxmc.models.tree_linear.xr_linear.fit`)
    share one pool, so that a small level's chunks fill the devices that a large
    level leaves idle.
    """

    COMPILE_US = 1.5e6  # a dual-CD program's compilation on a CPU core (1 - 1.5 s measured)

    def __init__(self, devices=None):
        self.devices = list(devices) if devices else jax.local_devices()
        self._workers = [ThreadPoolExecutor(1, thread_name_prefix=f"jxmc-{d.id}")
                         for d in self.devices]
        self._load = [0.0] * len(self.devices)
        self._programs = [set() for _ in self.devices]
        self._lock = threading.Lock()

    def submit(self, cost: float, fn, program=None) -> Future:
        """Runs ``fn(device)`` on the device where it would finish first.

        Args:
          cost: the item's estimated microseconds.
          fn: called with the chosen device, in that device's worker thread.
          program: a hashable name of the compiled program ``fn`` runs (None: none);
            a device that has not run it yet is charged :attr:`COMPILE_US` more.
        """
        with self._lock:
            extra = [0.0 if program is None or program in seen else self.COMPILE_US
                     for seen in self._programs]
            j = int(np.argmin(np.add(self._load, extra)))
            self._load[j] += cost
            if program is not None:
                self._programs[j].add(program)
        fut = self._workers[j].submit(fn, self.devices[j])
        fut.add_done_callback(lambda _: self._done(j, cost))
        return fut

    def _done(self, j: int, cost: float) -> None:
        with self._lock:
            self._load[j] -= cost

    def shutdown(self) -> None:
        for w in self._workers:
            w.shutdown(wait=True)


SLOT_BLOCK = 16  # newton: each parent's slots are padded to a multiple of this (jxmc.ops.svm)


def _newton(data, off, s_par, p_par, e_par, options: Options, B: int):
    """Yields ``(parents, W: f32[slots of parents, B])`` per chunk of parents, in the
    order the chunks finish."""
    slot, val, pair, parent, y, mask = data
    R = SLOT_BLOCK
    s_pad = -(-s_par // R) * R
    entries_cap = 1 << 22
    sizes = np.stack([s_pad, e_par], axis=1)
    limits = np.array([max(options.chunk_weights // B, R), entries_cap])
    chunks = sw.plan_chunks(sizes, limits)
    s_off, p_off, e_off = off["s"], off["p"], off["e"]
    q_off = _offsets(s_pad)
    block = 1 << 15
    # chunks within the limits share one padded shape (one compilation); a parent
    # over them gets power-of-two shapes and is solved in groups of children
    dims = np.array([[q_off[e] - q_off[a], p_off[e] - p_off[a], e_off[e] - e_off[a], e - a]
                     for a, e in chunks])
    normal = (dims[:, 0] <= limits[0]) & (dims[:, 2] <= limits[1])
    if normal.any():
        mx = dims[normal].max(axis=0)
        normal_caps = (int(mx[0]) + R, int(mx[1]) + 1, max(block, -(-int(mx[2]) // block) * block),
                       int(mx[3]))
    slot_parent = np.repeat(np.arange(len(s_par), dtype=np.int32), s_par)
    slot_pos = np.arange(len(slot_parent)) - s_off[slot_parent] + q_off[slot_parent]
    for (a, e), (nq, npr, ne, _), is_normal in zip(chunks, dims, normal, strict=True):
        if is_normal:
            s_cap, p_cap, e_cap, k_cap = normal_caps
        else:
            s_cap, p_cap = pow2(nq + R), pow2(npr + 1)
            e_cap, k_cap = max(block, pow2(ne)), 1
        es, ss = slice(e_off[a], e_off[e]), slice(s_off[a], s_off[e])
        c_slot = np.full(e_cap, s_cap - 1, np.int32)
        c_val = np.zeros(e_cap, np.float32)
        c_pair = np.full(e_cap, p_cap - 1, np.int32)
        c_slot[:ne] = slot_pos[slot[es]] - q_off[a]
        c_val[:ne] = val[es]
        c_pair[:ne] = pair[es] - p_off[a]
        sp_ = np.full(s_cap, k_cap - 1, np.int32)
        sp_[:nq] = np.repeat(np.arange(e - a, dtype=np.int32), s_pad[a:e])
        pp_ = np.full(p_cap, k_cap - 1, np.int32)
        pp_[:npr] = parent[p_off[a]:p_off[e]] - a
        width = B if is_normal else max(1, min(B, options.chunk_weights // s_cap))
        cols = []
        for c0 in range(0, B, width):  # groups of children (one group for normal chunks)
            c1 = min(B, c0 + width)
            c_y = np.zeros((p_cap, width), np.float32)
            c_mask = np.zeros((p_cap, width), np.float32)  # 0: padding pairs and children
            c_y[:npr, :c1 - c0] = y[p_off[a]:p_off[e], c0:c1]
            c_mask[:npr, :c1 - c0] = mask[p_off[a]:p_off[e], c0:c1]
            W = solve_squared_hinge(c_slot, c_val, c_pair, c_y, c_mask, sp_, pp_, cost=options.cost,
                                    n_parents=k_cap, newton_iters=options.newton_iters,
                                    cg_iters=options.cg_iters, block=block, slot_block=R)
            cols.append(np.asarray(W)[slot_pos[ss] - q_off[a], :c1 - c0])
        yield np.arange(a, e), np.hstack(cols)

"""A flat one-vs-all head over all ``L`` labels whose train step never forms the
``n x L`` logits nor the ``L x h`` weight gradient: ELMO's head (Zhang, Ullah,
Schultheis & Babbar, "ELMO: Efficiency via Low-precision and Peak Memory
Optimization in Large Output Spaces", ICML 2025, Sections 3-4).

The table ``w: bf16[Lp, h]`` (or ``float8_e4m3fn``) is the only copy of the
weights -- no f32 master copy, no optimizer state.  One train step
(:func:`head_step`) walks over the table ``chunk`` rows at a time in a
``lax.scan`` whose carry holds the table itself (updated in place by
``dynamic_update_slice``), and for chunk ``c``:

1. ``z = e @ w_c.T``: ``f32[n, chunk]`` logits of the embeddings ``e: f32[n, h]``;
2. the binary cross-entropy of ``z`` against the chunk's targets (built from the
   positives ``pos: i32[n, m]``) summed over labels, averaged over valid points;
3. ``dz = (sigmoid(z) - y) / n_valid``; ``g_e += dz @ w_c`` (the input gradient,
   accumulated over chunks, for the encoder's ``jax.vjp``) and
   ``g_c = dz.T @ e`` (``f32[chunk, h]``, the only weight gradient that exists);
4. plain SGD ``w_c <- w_c - lr * g_c`` rounded back to the table's dtype:

   * ``"stochastic"`` (default): unbiased stochastic rounding, so updates
     smaller than half an ulp survive in expectation (Gupta et al., "Deep
     Learning with Limited Numerical Precision", ICML 2015; ELMO Section 4.1);
   * ``"nearest"``: round to nearest even (what a plain cast does);
   * ``"none"``: no rounding, for an f32 table (the dense reference of the tests).

   The first ``kahan_rows`` rows (the most frequent labels; the method orders the
   rows by decreasing frequency) take a Kahan-compensated update instead (Kahan,
   "Further remarks on reducing truncation errors", CACM 1965; ELMO Section 4.2):
   a ``bf16`` compensation (:func:`comp_dtype`, also for an fp8 table) for those
   rows only carries the part of each update the rounding lost into the next one.
   Rows and compensation live in one array, the Kahan block (:func:`pack_kahan`),
   so that one in-place ``dynamic_update_slice`` per chunk writes both.

Every chunk's update uses the logits of the table as it was at the start of the
step, so the step equals the dense step ``w <- w - lr * dL/dw`` on the whole
table (tested against it in f32).  Peak memory of the head: the table (and the
compensation rows) plus ``O(n * chunk + chunk * h)`` temporaries (at Amazon-3M's
L = 2,812,281, h = 768, chunk 2048, 128 points: 4.87 GiB in bf16, 2.86 GiB in fp8,
of which 0.04 GiB temporaries).

On a mesh, :func:`head_step_sharded` splits the table's rows on ``model``: each
shard scans its own rows against the whole batch (gathered over ``data``) and only
the input gradient (and the loss) is summed across shards.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jxmc.nn.lowp import ROUNDINGS, UINT, from_bits, round_to, to_bits

TABLE_DTYPES = ("bfloat16", "float8_e4m3fn", "float32")


def kahan_add(w: jax.Array, comp: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(w', comp')`` after adding ``u: f32[...]`` to ``w`` (low precision) with Kahan
    compensation: ``y = u - comp; t = round(w + y); comp' = (t - w) - y; w' = t``
    (round to nearest; ``comp`` keeps the lost part, in bf16)."""
    wf = w.astype(jnp.float32)
    y = u - comp.astype(jnp.float32)
    t = (wf + y).astype(w.dtype)
    c = (t.astype(jnp.float32) - wf) - y
    return t, c.astype(comp.dtype)


def chunk_targets(pos: jax.Array, offset, chunk: int) -> jax.Array:
    """``f32[n, chunk]`` 1.0 where row ``offset + j`` is among the positives
    ``pos: i32[n, m]`` (``-1`` = none) of a point."""
    n = pos.shape[0]
    local = pos - offset
    local = jnp.where((pos >= 0) & (local >= 0) & (local < chunk), local, chunk)
    rows = jnp.broadcast_to(jnp.arange(n)[:, None], pos.shape)
    return jnp.zeros((n, chunk), jnp.float32).at[rows, local].set(1.0, mode="drop")


def _chunk_grads(e, wc, pos, valid_w, offset, n_rows, chunk, compute_dtype, ge_rows=None):
    """Loss, ``g_e`` and the chunk's ``g_w`` (steps 1-3 of the module docstring);
    ``ge_rows = (start, size)``: ``g_e`` of those points only (a data shard's)."""
    z = jnp.einsum("nh,ch->nc", e.astype(compute_dtype), wc.astype(compute_dtype),
                   preferred_element_type=jnp.float32)
    y = chunk_targets(pos, offset, chunk)
    live = (offset + jnp.arange(chunk) < n_rows).astype(jnp.float32)  # padding rows
    bce = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
    loss = jnp.sum(bce * live[None, :] * valid_w[:, None])
    dz = (jax.nn.sigmoid(z) - y) * live[None, :] * valid_w[:, None]
    dze = dz if ge_rows is None else jax.lax.dynamic_slice_in_dim(dz, ge_rows[0], ge_rows[1], 0)
    g_e = jnp.einsum("nc,ch->nh", dze.astype(compute_dtype), wc.astype(compute_dtype),
                     preferred_element_type=jnp.float32)
    g_w = jnp.einsum("nc,nh->ch", dz.astype(compute_dtype), e.astype(compute_dtype),
                     preferred_element_type=jnp.float32)
    return loss, g_e, g_w


def comp_dtype(dtype) -> jnp.dtype:
    """The Kahan compensation's dtype for a table of ``dtype``: ``bfloat16``
    (``float32`` for an f32 reference table).  Also for an fp8 table: the
    compensation holds the part of each update below the table's half ulp, which
    fp8 e4m3 (3 mantissa bits, smallest normal ``2^-6``) would mostly flush to zero
    or keep to 1 part in 16, where bf16 keeps 8 bits over f32's range."""
    return jnp.dtype(jnp.float32 if jnp.dtype(dtype) == jnp.float32 else jnp.bfloat16)


def kahan_planes(dtype) -> int:
    """``P``, the planes of the Kahan block of a table of ``dtype``: the rows' bits,
    then the compensation's bits in table-wide pieces (bf16: 2, fp8: 3, f32: 2)."""
    return 1 + comp_dtype(dtype).itemsize // jnp.dtype(dtype).itemsize


def pack_kahan(w_bits: jax.Array, c_bits: jax.Array) -> jax.Array:
    """The Kahan block ``u[P, Kc, h]`` of the rows' bit patterns ``w_bits: u[Kc, h]``
    and the compensation's ``c_bits`` (as wide or wider, most significant piece first).

    One array, so the scan's single ``dynamic_update_slice`` of a chunk's
    ``[P, chunk, h]`` writes rows and compensation together in place.  Two arrays
    need two updates, and XLA, which fuses the read of the old rows into the
    compensation's update, then copies the whole Kahan table at every chunk to keep
    the old rows alive past the rows' own update (0.8 GiB at Amazon-3M scale).
    """
    wb, cb = w_bits.dtype.itemsize, c_bits.dtype.itemsize
    planes = [w_bits]
    if cb == wb:
        planes.append(c_bits.astype(w_bits.dtype))
    else:
        mask = jnp.asarray((1 << 8 * wb) - 1, c_bits.dtype)
        for i in range(cb // wb):
            shift = jnp.asarray(8 * wb * (cb // wb - 1 - i), c_bits.dtype)
            planes.append(((c_bits >> shift) & mask).astype(w_bits.dtype))
    return jnp.stack(planes)


def unpack_kahan(block: jax.Array, cdtype) -> tuple[jax.Array, jax.Array]:
    """``(w_bits, c_bits)`` of a Kahan block (:func:`pack_kahan`); ``cdtype`` the
    compensation's float dtype."""
    cu = UINT[jnp.dtype(cdtype).itemsize]
    c = block[1].astype(cu)
    for p in range(2, block.shape[0]):
        c = (c << jnp.asarray(8 * block.dtype.itemsize, cu)) | block[p].astype(cu)
    return block[0], c


def _check(kc: int, Lp: int, chunk: int, rounding: str, shards: int = 1) -> None:
    unit = chunk * shards
    if Lp % unit or kc % unit or kc > Lp:
        raise ValueError(f"table rows {Lp} and Kahan rows {kc} must be multiples of chunk "
                         f"{chunk} x {shards} shards (Kahan rows <= table rows)")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


def _scan_step(kb, wp, e, pos, valid_w, lr, key, *, n_rows, chunk, rounding, compute_dtype,
               dtype, kbase=0, pbase=None, ge_rows=None):
    """The two scans of :func:`head_step` over a Kahan block ``kb: u[P, kc, h]`` whose
    first row is global row ``kbase`` and plain rows ``wp: u[Lp', h]`` from global row
    ``pbase`` (default ``kc``): ``(loss, g_e, kb', wp')``; either may be None (no rows)."""
    wdt, cdt = jnp.dtype(dtype), comp_dtype(dtype)
    kc, h = _rows(kb), e.shape[1]
    pbase = kc if pbase is None else pbase
    n_ge = e.shape[0] if ge_rows is None else ge_rows[1]
    e = e.astype(jnp.float32)
    lr = jnp.asarray(lr, jnp.float32)

    def grads(wc, off):
        return _chunk_grads(e, wc, pos, valid_w, off, n_rows, chunk, compute_dtype, ge_rows)

    def kahan_body(carry, j):
        kt, g_e, loss = carry
        off = j * chunk
        w_bits, c_bits = unpack_kahan(jax.lax.dynamic_slice_in_dim(kt, off, chunk, 1), cdt)
        wc, cc = from_bits(w_bits, wdt), from_bits(c_bits, cdt)
        l_c, ge_c, gw_c = grads(wc, kbase + off)
        wn, cn = kahan_add(wc, cc, -lr * gw_c)
        kt = jax.lax.dynamic_update_slice_in_dim(kt, pack_kahan(to_bits(wn), to_bits(cn)), off, 1)
        return (kt, g_e + ge_c, loss + l_c), None

    def plain_body(carry, j):
        wt, g_e, loss = carry
        off = j * chunk
        wc = from_bits(jax.lax.dynamic_slice_in_dim(wt, off, chunk, 0), wdt)
        l_c, ge_c, gw_c = grads(wc, pbase + off)
        new = wc.astype(jnp.float32) - lr * gw_c
        # the key of the chunk's global index: the same bits on any mesh
        wn = round_to(new, jax.random.fold_in(key, pbase // chunk + j), wdt, rounding)
        wt = jax.lax.dynamic_update_slice_in_dim(wt, to_bits(wn), off, 0)
        return (wt, g_e + ge_c, loss + l_c), None

    # Two scans over two arrays (the Kahan block and the other rows): one table carried
    # through two scans in a row is copied between them by XLA.
    g_e = jnp.zeros((n_ge, h), jnp.float32)
    loss = jnp.zeros((), jnp.float32)
    if kc:
        (kb, g_e, loss), _ = jax.lax.scan(kahan_body, (kb, g_e, loss),
                                          jnp.arange(kc // chunk, dtype=jnp.int32))
    if _rows(wp):
        (wp, g_e, loss), _ = jax.lax.scan(plain_body, (wp, g_e, loss),
                                          jnp.arange(wp.shape[0] // chunk, dtype=jnp.int32))
    return loss, g_e, kb, wp


def _rows(a, axis: int | None = None) -> int:
    """Rows of a Kahan block (axis 1) or of the plain rows (axis 0); 0 for None."""
    if a is None:
        return 0
    return a.shape[(1 if a.ndim == 3 else 0) if axis is None else axis]


def _valid_weights(valid: jax.Array) -> jax.Array:
    return valid.astype(jnp.float32) / jnp.maximum(valid.sum(), 1).astype(jnp.float32)


def head_step(w, comp: jax.Array | None, e: jax.Array, pos: jax.Array,
              valid: jax.Array, lr, key: jax.Array, *, n_rows: int, chunk: int,
              rounding: str = "stochastic", compute_dtype=jnp.float32, dtype=None):
    """One SGD step of the flat head (module docstring), chunk by chunk.

    Args:
      w: the table, either as the train state holds it, ``(kb, wp)`` with ``dtype``
        given: the Kahan block ``kb: u[P, Kc, h]`` (:func:`pack_kahan`: the bit patterns
        of the first ``Kc`` rows and of their compensation) and the bit patterns of
        the other rows ``wp: u[Lp - Kc, h]`` (:func:`init_table`; updated in place
        when donated; None for an empty part, which checkpoints cannot hold); or one float table ``[Lp, h]`` (bf16, float8_e4m3fn or f32),
        split into bits and back here (a copy each way, for tests and references).
        ``Lp`` and ``Kc`` multiples of ``chunk``; rows ``>= n_rows`` are padding (no
        loss, never updated usefully).
      comp: with a float table, the Kahan compensation ``[Kc, h]`` of its first ``Kc``
        rows (:func:`comp_dtype`), or None for no Kahan rows; None with ``(kb, wp)``.
      e: f32[n, h] the embeddings; pos: i32[n, m] each point's positive rows (-1 pad);
      valid: bool[n] real points (the loss is averaged over them).
      lr: f32[] the learning rate; key: PRNG key of the stochastic rounding.
      n_rows: the real rows ``L``; chunk: rows per scan step.
      rounding: one of :data:`ROUNDINGS` for the non-Kahan rows.
      compute_dtype: the matmuls' input dtype (f32 accumulation).
      dtype: the table's float dtype (needed with ``(kb, wp)``).

    Returns:
      ``(loss: f32[], g_e: f32[n, h], w', comp')``: the mean over valid points of
      the BCE summed over the ``L`` labels, its gradient in ``e``, the updated table
      and compensation, as given (``comp'`` None with ``(kb, wp)``).

    Raises:
      ValueError: ``Lp`` or ``Kc`` not a multiple of ``chunk``, an unknown rounding.
    """
    split = isinstance(w, tuple)
    if split:
        kb, wp = w
        wdt = jnp.dtype(dtype)
    else:
        wdt = jnp.dtype(w.dtype)
        kc = 0 if comp is None else comp.shape[0]
        _check(kc, w.shape[0], chunk, rounding)
        wb = to_bits(w)
        c = jnp.zeros((0, w.shape[1])) if comp is None else comp
        cb = to_bits(c.astype(comp_dtype(wdt)))
        kb = pack_kahan(wb[:kc], cb) if kc else None
        wp = wb[kc:] if w.shape[0] > kc else None
    _check(_rows(kb), _rows(kb) + _rows(wp), chunk, rounding)
    loss, g_e, kb, wp = _scan_step(kb, wp, e, pos, _valid_weights(valid), lr, key,
                                   n_rows=n_rows, chunk=chunk, rounding=rounding,
                                   compute_dtype=compute_dtype, dtype=wdt)
    if split:
        return loss, g_e, (kb, wp), None
    w = from_bits(table_rows((kb, wp)), wdt)
    if comp is not None and kb is not None:
        comp = from_bits(unpack_kahan(kb, comp_dtype(wdt))[1], comp_dtype(wdt)).astype(comp.dtype)
    return loss, g_e, w, comp


def head_step_sharded(w, e: jax.Array, pos: jax.Array, valid: jax.Array, lr, key: jax.Array, *,
                      mesh, n_rows: int, chunk: int, rounding: str = "stochastic",
                      compute_dtype=jnp.float32, dtype=None):
    """:func:`head_step` on a ``(data, model)`` mesh (:mod:`jxmc.sharding`), the table
    split by rows on ``model`` (Megatron-LM's vocabulary-parallel output layer).

    ``w = (kb, wp)`` as in :func:`head_step`, ``kb: u[P, Kc, h]`` split on ``model``
    along its rows (``P(None, "model")``), ``wp: u[Lp - Kc, h]`` on ``model``
    (``P("model")``): model shard ``s`` holds Kahan rows ``s Kc / M ..`` with their
    compensation and plain rows ``Kc + s (Lp - Kc) / M ..``, ``Kc`` and ``Lp - Kc``
    multiples of ``chunk * M``.  ``e, pos, valid`` are split on ``data``.

    Each device gathers the batch's embeddings, positives and valid flags over
    ``data`` (``n x h`` floats, the batch's ``n x m`` ids) and scans its own rows
    against the whole batch, so the weight gradient of a chunk ``dz.T @ e`` is
    summed over the ``data`` shards inside that matmul and every ``data`` replica
    of a model shard applies the same update: no ``chunk x h`` (in all
    ``Lp / M x h``) all-reduce of weight gradients over ``data``, at the price of
    repeating the head's matmuls on the ``D`` replicas.  Each device keeps the input
    gradient of its own ``n / D`` points, ``psum``-ed over ``model`` (the only sum
    across shards, with the loss scalar).  The stochastic rounding of a chunk uses
    the key of its global index, so the step equals one device's step.

    Returns:
      ``(loss: f32[] replicated, g_e: f32[n, h] on data, (kb', wp') in their layout)``.

    Raises:
      ValueError: ``Kc`` or ``Lp - Kc`` not a multiple of ``chunk * M``, ``n`` not of
        ``D``, an unknown rounding.
    """
    from jax.sharding import PartitionSpec as P

    from jxmc.sharding import DATA, MODEL

    kb, wp = w
    D, M = mesh.shape[DATA], mesh.shape[MODEL]
    kc, n = _rows(kb), e.shape[0]
    _check(kc, kc + _rows(wp), chunk, rounding, M)
    if n % D:
        raise ValueError(f"a batch of {n} points does not split across data={D}")
    kcl, pl, nl = kc // M, _rows(wp) // M, n // D

    def local(kb, wp, e, pos, valid, lr, key):
        m, d = jax.lax.axis_index(MODEL), jax.lax.axis_index(DATA)
        e, pos, valid = (jax.lax.all_gather(a, DATA, axis=0, tiled=True) for a in (e, pos, valid))
        loss, g_e, kb, wp = _scan_step(kb, wp, e, pos, _valid_weights(valid), lr, key,
                                       n_rows=n_rows, chunk=chunk, rounding=rounding,
                                       compute_dtype=compute_dtype, dtype=dtype,
                                       kbase=m * kcl, pbase=kc + m * pl, ge_rows=(d * nl, nl))
        return jax.lax.psum(loss, MODEL), jax.lax.psum(g_e, MODEL), kb, wp

    # check_vma=False: the loss is the same on every data shard after the psum
    loss, g_e, kb, wp = jax.shard_map(
        local, mesh=mesh, in_specs=(P(None, MODEL), P(MODEL), P(DATA), P(DATA), P(DATA), P(), P()),
        out_specs=(P(), P(DATA), P(None, MODEL), P(MODEL)), check_vma=False)(
            kb, wp, e, pos, valid, jnp.asarray(lr, jnp.float32), key)
    return loss, g_e, (kb, wp)


def init_table(kc: int, rows: int, h: int, dtype) -> tuple[jax.Array, jax.Array]:
    """The zero table as the train state holds it (:func:`head_step`'s ``(kb, wp)``):
    the Kahan block ``u[P, kc, h]`` (zero rows, zero compensation) and the bit
    patterns of the other ``rows - kc`` rows, None for either without rows (orbax
    saves no zero-size array).  OvA linear classifiers start at zero (the targets
    break the symmetry)."""
    bits = UINT[jnp.dtype(dtype).itemsize]
    return (jnp.zeros((kahan_planes(dtype), kc, h), bits) if kc else None,
            jnp.zeros((rows - kc, h), bits) if rows > kc else None)


def table_rows(w) -> jax.Array:
    """The ``[Lp, h]`` bit patterns of the rows of a train-state table ``(kb, wp)``."""
    return jnp.concatenate([a for a in (None if w[0] is None else w[0][0], w[1])
                            if a is not None])


def dense_loss(w: jax.Array, e: jax.Array, pos: jax.Array, valid: jax.Array, *,
               n_rows: int) -> jax.Array:
    """The same loss as :func:`head_step` from the dense ``f32[n, Lp]`` logits (the
    reference of the tests; forms everything the chunked step avoids)."""
    z = e.astype(jnp.float32) @ w.astype(jnp.float32).T
    y = chunk_targets(pos, 0, w.shape[0])
    live = (jnp.arange(w.shape[0]) < n_rows).astype(jnp.float32)
    vw = _valid_weights(valid)
    bce = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
    return jnp.sum(bce * live[None, :] * vw[:, None])


@functools.partial(jax.jit, static_argnames=("n_rows", "chunk", "rounding", "compute_dtype",
                                             "dtype"), donate_argnums=(0, 1))
def head_step_jit(w, comp, e, pos, valid, lr, key, *, n_rows, chunk, rounding="stochastic",
                  compute_dtype=jnp.float32, dtype=None):
    """:func:`head_step` jitted, the table and compensation donated (updated in place)."""
    return head_step(w, comp, e, pos, valid, lr, key, n_rows=n_rows, chunk=chunk,
                     rounding=rounding, compute_dtype=compute_dtype, dtype=dtype)

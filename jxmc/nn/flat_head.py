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
   a ``bf16`` compensation buffer ``comp`` for those rows only carries the part
   of each update the rounding lost into the next one.

Every chunk's update uses the logits of the table as it was at the start of the
step, so the step equals the dense step ``w <- w - lr * dL/dw`` on the whole
table (tested against it in f32).  Peak memory of the head: the table (and the
compensation rows) plus ``O(n * chunk + chunk * h)`` temporaries.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

ROUNDINGS = ("stochastic", "nearest", "none")
TABLE_DTYPES = ("bfloat16", "float8_e4m3fn", "float32")
_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def stochastic_round_bf16(x: jax.Array, key: jax.Array) -> jax.Array:
    """``bf16`` of ``x: f32[...]`` rounded up or down at random, up with probability
    (distance to the lower neighbour) / ulp, so ``E[round(x)] = x``.

    Adds uniform random bits below bf16's last mantissa bit (the low 16 bits of
    the f32 pattern) and truncates them: a carry into bit 16 happens with exactly
    that probability.  Works on the magnitude bits, so negative values round
    symmetrically; inf and nan pass through (nan may change payload).
    """
    x = x.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    noise = jax.random.bits(key, x.shape, jnp.uint32) >> 16
    finite = jnp.isfinite(x)
    rounded = jnp.where(finite, (bits + noise) & jnp.uint32(0xFFFF0000),
                        bits & jnp.uint32(0xFFFF0000))
    return jax.lax.bitcast_convert_type(rounded, jnp.float32).astype(jnp.bfloat16)


def stochastic_round(x: jax.Array, key: jax.Array, dtype) -> jax.Array:
    """``x: f32[...]`` stochastically rounded to ``dtype`` (bf16 by
    :func:`stochastic_round_bf16`; other floats by picking one of the two
    neighbours that bracket ``x`` with probability proportional to closeness).
    Values beyond the dtype's finite range are clipped to it (fp8 e4m3fn has no inf)."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.bfloat16:
        return stochastic_round_bf16(x, key)
    if dtype == jnp.float32:
        return x.astype(jnp.float32)
    info = jnp.finfo(dtype)
    a = jnp.minimum(jnp.abs(x.astype(jnp.float32)), float(info.max))
    near = a.astype(dtype)
    nf = near.astype(jnp.float32)
    ubits = {1: jnp.uint8, 2: jnp.uint16}[dtype.itemsize]
    nb = jax.lax.bitcast_convert_type(near, ubits)
    # the neighbours bracketing a (magnitudes: the bit pattern is monotone in the value)
    lo_b = jnp.where(nf > a, nb - 1, nb).astype(ubits)
    lo = jax.lax.bitcast_convert_type(lo_b, dtype)
    hi = jax.lax.bitcast_convert_type(jnp.where(nf > a, nb, nb + 1).astype(ubits), dtype)
    lof, hif = lo.astype(jnp.float32), hi.astype(jnp.float32)
    gap = jnp.where(jnp.isfinite(hif) & (hif > lof), hif - lof, 1.0)
    p_up = jnp.where(jnp.isfinite(hif) & (hif > lof), (a - lof) / gap, 0.0)
    up = jax.random.uniform(key, x.shape) < p_up
    mag = jnp.where(up, hi, lo)
    return jnp.where(x < 0, -mag.astype(jnp.float32), mag.astype(jnp.float32)).astype(dtype)


def round_to(x: jax.Array, key: jax.Array, dtype, rounding: str) -> jax.Array:
    """``x: f32[...]`` in ``dtype`` by ``rounding`` (one of :data:`ROUNDINGS`)."""
    if rounding == "stochastic":
        return stochastic_round(x, key, dtype)
    return x.astype(dtype)


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


def _chunk_grads(e, wc, pos, valid_w, offset, n_rows, chunk, compute_dtype):
    """Loss, ``dz`` and the chunk's gradients (steps 1-3 of the module docstring)."""
    z = jnp.einsum("nh,ch->nc", e.astype(compute_dtype), wc.astype(compute_dtype),
                   preferred_element_type=jnp.float32)
    y = chunk_targets(pos, offset, chunk)
    live = (offset + jnp.arange(chunk) < n_rows).astype(jnp.float32)  # padding rows
    bce = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
    loss = jnp.sum(bce * live[None, :] * valid_w[:, None])
    dz = (jax.nn.sigmoid(z) - y) * live[None, :] * valid_w[:, None]
    g_e = jnp.einsum("nc,ch->nh", dz.astype(compute_dtype), wc.astype(compute_dtype),
                     preferred_element_type=jnp.float32)
    g_w = jnp.einsum("nc,nh->ch", dz.astype(compute_dtype), e.astype(compute_dtype),
                     preferred_element_type=jnp.float32)
    return loss, g_e, g_w


def head_step(w: jax.Array, comp: jax.Array | None, e: jax.Array, pos: jax.Array,
              valid: jax.Array, lr, key: jax.Array, *, n_rows: int, chunk: int,
              rounding: str = "stochastic", compute_dtype=jnp.float32, dtype=None):
    """One SGD step of the flat head (module docstring), chunk by chunk.

    Args:
      w: [Lp, h] the table (bf16, float8_e4m3fn or f32), ``Lp`` a multiple of
        ``chunk``; rows ``>= n_rows`` are padding (no loss, never updated usefully).
      comp: bf16[Kc, h] Kahan compensation of the first ``Kc`` rows (``Kc`` a
        multiple of ``chunk``), or None for no Kahan rows.
      e: f32[n, h] the embeddings; pos: i32[n, m] each point's positive rows (-1 pad);
      valid: bool[n] real points (the loss is averaged over them).
      lr: f32[] the learning rate; key: PRNG key of the stochastic rounding.
      n_rows: the real rows ``L``; chunk: rows per scan step.
      rounding: one of :data:`ROUNDINGS` for the non-Kahan rows.
      compute_dtype: the matmuls' input dtype (f32 accumulation).
      dtype: the table's float dtype when ``w`` (and ``comp``) hold its bit patterns
        (``uint16`` for bf16, ``uint8`` for fp8, ``uint32`` for f32; see below).

    Keep the table as bit patterns (:func:`to_bits`) between steps, split into the
    Kahan rows and the others (``w = (w_kahan, w_plain)``): the scans then update
    it in place.  Given a float table, XLA moves the chunk's conversion
    to f32 out through the ``dynamic-update-slice`` onto the whole table, which it
    then converts (or copies) at every chunk; a float ``w`` is therefore turned
    into bits for the scan and back (one copy each way, fine for tests).

    Returns:
      ``(loss: f32[], g_e: f32[n, h], w', comp')``: the mean over valid points of
      the BCE summed over the ``L`` labels, its gradient in ``e``, the updated table
      and compensation (same shapes and dtypes).

    Raises:
      ValueError: ``Lp`` or ``Kc`` not a multiple of ``chunk``, an unknown rounding.
    """
    split = isinstance(w, tuple)
    if split:
        wk, wp = w
        wdt = jnp.dtype(dtype)
        kc, h = wk.shape
        Lp = kc + wp.shape[0]
    else:
        wdt = w.dtype if jnp.issubdtype(w.dtype, jnp.floating) else jnp.dtype(dtype)
        Lp, h = w.shape
        kc = 0 if comp is None else comp.shape[0]
    if Lp % chunk or kc % chunk or kc > Lp or (comp is None) != (kc == 0):
        raise ValueError(f"table rows {Lp} and Kahan rows {kc} must be multiples of chunk "
                         f"{chunk} (Kahan rows <= table rows, comp given iff Kahan rows)")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    n = e.shape[0]
    valid_w = valid.astype(jnp.float32) / jnp.maximum(valid.sum(), 1).astype(jnp.float32)
    e = e.astype(jnp.float32)
    lr = jnp.asarray(lr, jnp.float32)
    cdt_ = jnp.dtype(jnp.bfloat16)
    if not split:  # a whole table (tests, references): split it into bits and back
        bits_in = jnp.issubdtype(w.dtype, jnp.floating)
        wb = to_bits(w) if bits_in else w
        wk, wp = wb[:kc], wb[kc:]
        if comp is not None and jnp.issubdtype(comp.dtype, jnp.floating):
            comp = to_bits(comp)
    if comp is not None:  # bf16 compensation (f32 with an f32 reference table)
        cdt_ = jnp.dtype(jnp.float32 if comp.dtype.itemsize == 4 else jnp.bfloat16)

    def grads(wt, j, base):
        off = j * chunk
        wc = from_bits(jax.lax.dynamic_slice_in_dim(wt, off, chunk, 0), wdt)
        return off, wc, _chunk_grads(e, wc, pos, valid_w, base + off, n_rows, chunk,
                                     compute_dtype)

    def kahan_body(carry, j):
        wt, ct, g_e, loss = carry
        off, wc, (l_c, ge_c, gw_c) = grads(wt, j, 0)
        cc = from_bits(jax.lax.dynamic_slice_in_dim(ct, off, chunk, 0), cdt_)
        wn, cn = kahan_add(wc, cc, -lr * gw_c)
        wt = jax.lax.dynamic_update_slice_in_dim(wt, to_bits(wn), off, 0)
        ct = jax.lax.dynamic_update_slice_in_dim(ct, to_bits(cn), off, 0)
        return (wt, ct, g_e + ge_c, loss + l_c), None

    def plain_body(carry, j):
        wt, g_e, loss = carry
        off, wc, (l_c, ge_c, gw_c) = grads(wt, j, kc)
        new = wc.astype(jnp.float32) - lr * gw_c
        wn = round_to(new, jax.random.fold_in(key, kc // chunk + j), wdt, rounding)
        wt = jax.lax.dynamic_update_slice_in_dim(wt, to_bits(wn), off, 0)
        return (wt, g_e + ge_c, loss + l_c), None

    # Two scans over two arrays (the Kahan rows and the others): one table carried
    # through two scans in a row is copied between them by XLA.
    g_e = jnp.zeros((n, h), jnp.float32)
    loss = jnp.zeros((), jnp.float32)
    if kc:
        (wk, comp, g_e, loss), _ = jax.lax.scan(kahan_body, (wk, comp, g_e, loss),
                                                jnp.arange(kc // chunk, dtype=jnp.int32))
    if Lp > kc:
        (wp, g_e, loss), _ = jax.lax.scan(plain_body, (wp, g_e, loss),
                                          jnp.arange((Lp - kc) // chunk, dtype=jnp.int32))
    if split:
        return loss, g_e, (wk, wp), comp
    w = jnp.concatenate([wk, wp]) if kc else wp
    if bits_in:
        w = from_bits(w, wdt)
        comp = None if comp is None else from_bits(comp, cdt_)
    return loss, g_e, w, comp


def to_bits(a: jax.Array) -> jax.Array:
    """The bit patterns of a float array (unsigned ints of the same width)."""
    return jax.lax.bitcast_convert_type(a, _UINT[jnp.dtype(a.dtype).itemsize])


def from_bits(a: jax.Array, dtype) -> jax.Array:
    """The floats of dtype ``dtype`` whose bit patterns are ``a`` (:func:`to_bits`)."""
    return jax.lax.bitcast_convert_type(a, jnp.dtype(dtype))


def dense_loss(w: jax.Array, e: jax.Array, pos: jax.Array, valid: jax.Array, *,
               n_rows: int) -> jax.Array:
    """The same loss as :func:`head_step` from the dense ``f32[n, Lp]`` logits (the
    reference of the tests; forms everything the chunked step avoids)."""
    z = e.astype(jnp.float32) @ w.astype(jnp.float32).T
    y = chunk_targets(pos, 0, w.shape[0])
    live = (jnp.arange(w.shape[0]) < n_rows).astype(jnp.float32)
    vw = valid.astype(jnp.float32) / jnp.maximum(valid.sum(), 1).astype(jnp.float32)
    bce = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
    return jnp.sum(bce * live[None, :] * vw[:, None])


@functools.partial(jax.jit, static_argnames=("n_rows", "chunk", "rounding", "compute_dtype",
                                             "dtype"), donate_argnums=(0, 1))
def head_step_jit(w, comp, e, pos, valid, lr, key, *, n_rows, chunk, rounding="stochastic",
                  compute_dtype=jnp.float32, dtype=None):
    """:func:`head_step` jitted, the table and compensation donated (updated in place)."""
    return head_step(w, comp, e, pos, valid, lr, key, n_rows=n_rows, chunk=chunk,
                     rounding=rounding, compute_dtype=compute_dtype, dtype=dtype)

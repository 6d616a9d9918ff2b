"""Low-precision storage of label tables: bit patterns and unbiased stochastic rounding.

A ``bf16`` (or ``float8_e4m3fn``) table updated by small steps loses them when each
update is rounded to nearest (an update below half an ulp vanishes); rounding up or
down at random, up with probability proportional to the distance, keeps them in
expectation (Gupta, Agrawal, Gopalakrishnan & Narayanan, "Deep Learning with Limited
Numerical Precision", ICML 2015; ELMO, Zhang et al., ICML 2025, Section 3).  Tables
are held as their bit patterns (:func:`to_bits` / :func:`from_bits`) where XLA would
otherwise convert a whole table around a scatter.  Used by :mod:`jxmc.nn.flat_head`
(ELMO's head) and :mod:`jxmc.nn.sparse_rows` (the tree heads' sparse row updates).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROUNDINGS = ("stochastic", "nearest", "none")
UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


NOISES = ("threefry", "hash")
"""Random bits of the stochastic rounding: ``"threefry"`` (:func:`jax.random.bits`) or
``"hash"`` (:func:`hashed_bits`: elementwise, fused into the rounding, no buffer)."""


def hashed_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``u32[shape]`` pseudo-random bits: a counter hash of each element's flat index
    and two words drawn from ``key`` (the ``lowbias32`` mixer, C. Wellons, "Hash
    function prospector", 2018, applied twice).  Elementwise in the index, so XLA fuses
    it into its consumer and no ``u32[shape]`` buffer exists (threefry's
    :func:`jax.random.bits` materialises several); statistically weaker than threefry
    but far beyond what an unbiased rounding needs (tests/test_elmo.py)."""
    seed = jax.random.bits(key, (2,), jnp.uint32)
    idx = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in range(len(shape) - 1, -1, -1):
        idx = idx + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride *= shape[axis]

    def mix(x):
        x = x ^ (x >> 16)
        x = x * jnp.uint32(0x7FEB352D)
        x = x ^ (x >> 15)
        x = x * jnp.uint32(0x846CA68B)
        return x ^ (x >> 16)

    return mix(mix(idx * jnp.uint32(0x9E3779B9) + seed[0]) ^ seed[1])


def _bits(key, shape, noise: str) -> jax.Array:
    if noise == "hash":
        return hashed_bits(key, shape)
    if noise == "threefry":
        return jax.random.bits(key, shape, jnp.uint32)
    raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")


def stochastic_round_bf16(x: jax.Array, key: jax.Array, noise: str = "threefry") -> jax.Array:
    """``bf16`` of ``x: f32[...]`` rounded up or down at random, up with probability
    (distance to the lower neighbour) / ulp, so ``E[round(x)] = x``.

    Adds uniform random bits below bf16's last mantissa bit (the low 16 bits of
    the f32 pattern) and truncates them: a carry into bit 16 happens with exactly
    that probability.  Works on the magnitude bits, so negative values round
    symmetrically; inf and nan pass through (nan may change payload).  ``noise``:
    one of :data:`NOISES`.
    """
    x = x.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    noise = _bits(key, x.shape, noise) >> 16
    finite = jnp.isfinite(x)
    rounded = jnp.where(finite, (bits + noise) & jnp.uint32(0xFFFF0000),
                        bits & jnp.uint32(0xFFFF0000))
    return jax.lax.bitcast_convert_type(rounded, jnp.float32).astype(jnp.bfloat16)


def stochastic_round(x: jax.Array, key: jax.Array, dtype, noise: str = "threefry") -> jax.Array:
    """``x: f32[...]`` stochastically rounded to ``dtype`` (bf16 by
    :func:`stochastic_round_bf16`; other floats by picking one of the two
    neighbours that bracket ``x`` with probability proportional to closeness).
    Values beyond the dtype's finite range are clipped to it (fp8 e4m3fn has no inf).
    ``noise``: where the random bits come from (:data:`NOISES`)."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.bfloat16:
        return stochastic_round_bf16(x, key, noise)
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
    uniform = (_bits(key, x.shape, noise) >> 8).astype(jnp.float32) * (2.0 ** -24)
    up = uniform < p_up
    mag = jnp.where(up, hi, lo)
    return jnp.where(x < 0, -mag.astype(jnp.float32), mag.astype(jnp.float32)).astype(dtype)


def round_to(x: jax.Array, key: jax.Array, dtype, rounding: str) -> jax.Array:
    """``x: f32[...]`` in ``dtype`` by ``rounding`` (one of :data:`ROUNDINGS`)."""
    if rounding == "stochastic":
        return stochastic_round(x, key, dtype)
    return x.astype(dtype)


def to_bits(a: jax.Array) -> jax.Array:
    """The bit patterns of a float array (unsigned ints of the same width)."""
    return jax.lax.bitcast_convert_type(a, UINT[jnp.dtype(a.dtype).itemsize])


def from_bits(a: jax.Array, dtype) -> jax.Array:
    """The floats of dtype ``dtype`` whose bit patterns are ``a`` (:func:`to_bits`)."""
    return jax.lax.bitcast_convert_type(a, jnp.dtype(dtype))

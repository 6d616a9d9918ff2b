"""jxmc on the harness's features (runs in jxmc's venv).

``python run_jxmc.py WORK OUT`` (see :mod:`common` for the folders).

``get_method(spec["method"])``, its default ``Config`` (plus the spec's
``jxmc_set`` overrides), ``fit(X, Y, config, seed=spec['seed'], progress=False)``,
``prepare(params, config)`` once (timed as ``prepare_s``) and ``predict(prepared, X,
config, k=k)`` for every call.

Compilation time is read from JAX's own monitoring events: every jaxpr trace,
lowering to MLIR and XLA backend compile reports its time span
(``jax.monitoring.register_event_time_span_listener``; events
``/jax/core/compile/{jaxpr_trace,jaxpr_to_mlir_module,backend_compile}_duration``),
and the compile time of a phase is the length of the union of those spans that
fall inside it (nested traces are counted once).  The rest of the phase is
everything else: host work, device compute and transfers.  The persistent
compilation cache is what ``JXMC_COMPILE_CACHE`` says, as for ``jxmc train``
(:func:`jxmc.devices.use_compile_cache`); the harness sets it ``off`` (cold)
unless it measures the warm state (``--compile-cache cold+warm``).  Like the
``jxmc`` command line, the run splits the host into as many JAX devices as it
has threads (``--threads``; :mod:`jxmc.devices`), so that the solver's chunks
run on every core.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from jxmc.devices import limit_heap_growth, use_compile_cache, use_host_cores  # noqa: E402

use_host_cores(int(os.environ.get("OMP_NUM_THREADS", "0")) or None)  # as `jxmc train` does
limit_heap_growth()
COMPILE_CACHE = use_compile_cache()

COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class CompileClock:
    """Collects JAX compile time spans; :meth:`within` sums their union in a window."""

    def __init__(self):
        import jax

        self.spans: list[tuple[float, float]] = []
        self.events = 0

        def listener(event, start_time, end_time, **_kw):
            if event in COMPILE_EVENTS:
                self.spans.append((float(start_time), float(end_time)))
                self.events += 1

        jax.monitoring.register_event_time_span_listener(listener)

    def within(self, a: float, b: float) -> float:
        """Seconds of ``[a, b]`` (``time.time()`` clock) covered by compile spans."""
        pieces = sorted((max(s, a), min(e, b)) for s, e in self.spans if e > a and s < b)
        total, cur_s, cur_e = 0.0, None, None
        for s, e in pieces:
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    total += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        if cur_e is not None:
            total += cur_e - cur_s
        return total


def run(work: str, out: str) -> dict:
    clock = CompileClock()  # before any JAX work
    from importlib.metadata import version

    import jax
    import numpy as np
    import scipy

    import jxmc
    from jxmc import modeldir
    from jxmc.models import get_method
    from jxmc.models.base import config_to_dict, parse_overrides

    spec, X, Y, Xt, one_idx = common.load_work(work)
    k = int(spec["k"])
    method = get_method(spec["method"])
    config = parse_overrides(method.Config, list(spec.get("jxmc_set") or []))
    jax.numpy.zeros(1).block_until_ready()  # start the backend outside the timed fit
    rss_load = common.maxrss_mb()

    w0, t0 = time.time(), time.perf_counter()
    seed = int(spec.get("seed", 0))
    params = method.fit(X, Y, config, seed=seed, progress=False)
    params = jax.tree_util.tree_map(np.asarray, params)  # everything on the host: fit is done
    train_s = time.perf_counter() - t0
    compile_s = clock.within(w0, time.time())
    rss_train = common.maxrss_mb()

    model_dir = os.path.join(out, "model")
    modeldir.save(model_dir, method=method.name, config=config_to_dict(config), seed=seed,
                  data={"dataset": spec["dataset"], "bench": True}, params=params,
                  label_names=None, featurizer=None)

    # Prepared once, as a user of the model (jxmc.predictor.Predictor, jxmc serve) does: the
    # rankers go to the device once, not once per call (PECOS and napkinXC load theirs once too).
    t_prep = time.perf_counter()
    prepared = method.prepare(params, config)
    # a tree-linear model lays its levels out on the device at its first large batch
    # (xr_linear.Layouts): done here, so that prepare_s holds both layouts
    state = getattr(prepared.state, "device", prepared.state)
    jax.block_until_ready([x for x in jax.tree_util.tree_leaves(state) if isinstance(x, jax.Array)])
    prepare_s = time.perf_counter() - t_prep

    def predict(x):
        return np.asarray(method.predict(prepared, x, config, k=k).ids)

    windows = {}
    state = {"w": time.time()}

    def on_pass(name, _s):
        now = time.time()
        windows[name] = clock.within(state["w"], now)
        state["w"] = now

    ids, pt = common.predict_passes(predict, predict, Xt, one_idx, on_pass=on_pass)
    common.save_pred(out, ids)
    return {
        "system": "jxmc",
        "method": method.name,
        "settings": {"method": method.name, **config_to_dict(config), "seed": seed},
        "train_s": train_s,
        "compile_s": compile_s,
        "predict": pt,
        "predict_compile_s": sum(windows.values()),
        "prepare_s": prepare_s,
        "predict_compile_by_pass_s": windows,
        "compile_events": clock.events,
        "compile_cache": COMPILE_CACHE or "off",
        "model_bytes": common.dir_bytes(model_dir),
        "rss_after_load_mb": rss_load,
        "rss_after_train_mb": rss_train,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "versions": {"jxmc": jxmc.__version__, "jax": jax.__version__, "jaxlib": version("jaxlib"), "numpy": np.__version__,
                     "scipy": scipy.__version__, "python": sys.version.split()[0]},
    }


if __name__ == "__main__":
    common.runner_main(run)

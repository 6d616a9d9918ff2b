"""jxmc: extreme multi-label classification in JAX.

The public names, flat.  Submodules: :mod:`jxmc.data` (formats, TF-IDF,
synthetic data, batches), :mod:`jxmc.metrics`, :mod:`jxmc.models` (the
``--method`` s), :mod:`jxmc.ops`, :mod:`jxmc.checkpoint`, :mod:`jxmc.modeldir`.
"""

from jxmc.data.dataset import Dataset, Split, load_dataset
from jxmc.errors import ConfigError, DataError, JxmcError, ModelError
from jxmc.models import get_method
from jxmc.types import Batch, SparseRows, TopK
from jxmc.version import __version__

__all__ = [
    "Batch", "ConfigError", "DataError", "Dataset", "JxmcError", "ModelError", "SparseRows",
    "Split", "TopK", "__version__", "get_method", "load_dataset",
]

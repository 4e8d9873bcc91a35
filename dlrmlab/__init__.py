"""dlrmlab: make DLRM embedding-bag inference fast on GPUs, from Python and Numba."""

from dlrmlab.errors import DlrmlabError

__version__ = "0.1.0"
__all__ = ["DlrmlabError", "__version__"]

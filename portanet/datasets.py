"""The data loaders under their first public name; the code lives in :mod:`portanet.data`.

``from portanet import datasets; datasets.load_mnist()`` and ``datasets.to_device(...)`` keep
working, as README, the examples and bench use them.
"""

from portanet.data import *  # noqa: F403
from portanet.data import __all__  # noqa: F401

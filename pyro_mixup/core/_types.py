"""Type aliases of the backend-neutral core.

The core imports neither torch nor jax, so it cannot name their classes: an
array (a ``torch.Tensor`` or a ``jax.Array``), a distribution (from
``torch.distributions`` / ``pyro.distributions`` or ``numpyro.distributions``)
and the ``ops`` namespace of array functions are ``Any`` to the type checker,
under names that say which is meant. The adapters annotate with the
libraries' own classes.
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: A torch tensor or a JAX array (a weight may also be a Python or NumPy scalar).
Array: TypeAlias = Any

#: A distribution of the backend's library (torch / Pyro, or NumPyro).
Distribution: TypeAlias = Any

#: The backend's namespace of array functions (``torch`` or ``jax.numpy`` ones),
#: used by :mod:`pyro_mixup.core.families` and :mod:`pyro_mixup.core.targets`.
Ops: TypeAlias = Any

#: A message of the library's effect system: a site's dict, as Pyro and NumPyro send it
#: (Pyro types it as a TypedDict, NumPyro as ``dict[str, Any]``; no type both fit and
#: that allows item assignment, hence ``Any``).
Message: TypeAlias = Any

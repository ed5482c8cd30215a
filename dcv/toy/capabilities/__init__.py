"""Registry of the toy world's prior capabilities: one module each, all with the `Capability` interface.

Adding a capability is adding a module with a subclass decorated by `@register`.
"""

from dcv.toy.capabilities.base import REGISTRY, Capability, ProbePair, register  # noqa: F401
from dcv.toy.capabilities import arithmetic, facts, induction, ioi, mcqa  # noqa: F401  (registration)

__all__ = ["REGISTRY", "Capability", "ProbePair", "register"]

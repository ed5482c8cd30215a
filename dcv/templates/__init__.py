"""Probe sets for any Hugging Face tokenizer, from templates (the real profile's prior capabilities).

One module per capability, each a `TemplateCapability` registered in `REGISTRY` by name; `build_probe_sets`
filters their candidates for a tokenizer and cuts disjoint, seeded splits. Adding a capability is adding a module
here with a subclass decorated by `@register` (and importing it below).
"""

from dcv.templates.base import REGISTRY, TemplateCapability, register  # noqa: F401
from dcv.templates import arithmetic, capitals, greater_than, induction, ioi, mcqa  # noqa: F401  (registration)
from dcv.templates.build import REASONS, build_probe_sets, capability_pairs, filter_pairs  # noqa: F401

__all__ = ["REGISTRY", "REASONS", "TemplateCapability", "build_probe_sets", "capability_pairs", "filter_pairs",
           "register"]

"""The head-scoring methods as registered entries (as auto-circuit's `PruneAlgo` entries): each says what function
computes it, which `CircuitsConfig` fields feed its knobs, what it returns and what its output may be used for.
Callers bind a method once from the config and never test its name; adding a method is adding one entry here (and
its knobs to `CircuitsConfig`, whose `method` names the entries: a test keeps the two equal).

    bound = bind("eap-ig", config)           # or bind("eap-ig", eap_ig_steps=3): fields of CircuitsConfig
    result = bound(model, batches)           # HeadEffects (dbm: HeadMask); `probed=` reuses cached runs
    bound.steps, bound.method.reference, bound.method.magnitudes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping

from dcv.circuits.config import CircuitsConfig
from dcv.circuits.dbm import HeadMask, dbm
from dcv.circuits.effects import HeadEffects, attribution_from_scratch, eap, eap_ig, exact
from dcv.circuits.pairs import PairBatch
from dcv.circuits.patching import ProbedModel, probe_model


@dataclass(frozen=True)
class Method:
    """One registered way to score every head of a model on a probe set."""

    name: str
    compute: Callable[..., Any]  # (ProbedModel, **knobs) -> the raw output `returns.build` takes
    knobs: Mapping[str, str] = field(default_factory=dict)  # compute's keyword -> the CircuitsConfig field bound to it
    returns: type = HeadEffects  # the result class; `returns.build(bound, probed, raw)` makes the result
    reference: bool = False  # the method the others are validated against (and magnitude-based measures trust)
    magnitudes: bool = False  # |score| is the patched effect on m itself, comparable across heads and models
    validate: bool = False  # compared with the reference under `circuits.validate` (metrics of extract-circuits)
    # (model, batches, **knobs) -> (ProbedModel, raw): computes without cached runs, making them on the way
    from_scratch: Callable[..., tuple[ProbedModel, Any]] | None = None

    def bind(self, config: CircuitsConfig | None = None, **fields) -> "BoundMethod":
        """The knobs taken from `config` (default: CircuitsConfig()), `fields` (CircuitsConfig field names) first.
        Overrides are validated as the params file is (ValueError naming the field)."""
        cfg = config or CircuitsConfig()
        if fields:
            cfg = CircuitsConfig.model_validate({**cfg.model_dump(by_alias=True), **fields})
        return BoundMethod(self, {kw: getattr(cfg, f) for kw, f in self.knobs.items()})


@dataclass(frozen=True)
class BoundMethod:
    """A method with its knobs bound: call it on a model and probe batches."""

    method: Method
    knobs: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def steps(self) -> int | None:
        """The `steps` knob of the method (eap-ig's gradient points, dbm's optimisation steps), None for a method
        without one; the circuits JSON's `steps`."""
        return self.knobs.get("steps")

    def __call__(self, model, batches: list[PairBatch], probed: ProbedModel | None = None):
        """Scores of every head of `model` on the pairs of `batches`; `probed` reuses the clean and corrupted runs
        of an earlier call on the same model and batches (then `batches` is not read)."""
        m = self.method
        if probed is None and m.from_scratch is not None:
            probed, raw = m.from_scratch(model, batches, **self.knobs)
        else:
            probed = probed or probe_model(model, batches)
            raw = m.compute(probed, **self.knobs)
        return m.returns.build(self, probed, raw)


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("exact", exact, {"heads_per_forward": "heads_per_forward"}, reference=True, magnitudes=True),
    Method("eap", eap, validate=True, from_scratch=partial(attribution_from_scratch, steps=1, chunk=1)),
    Method("eap-ig", eap_ig, {"steps": "eap_ig_steps", "chunk": "heads_per_forward"}, validate=True,
           from_scratch=attribution_from_scratch),
    Method("dbm", dbm, {"steps": "dbm_steps", "lr": "dbm_lr", "sparsity": "dbm_lambda", "t_start": "dbm_temperature_start",
                        "t_end": "dbm_temperature_end", "init": "dbm_init"}, returns=HeadMask),
)}
METHODS = tuple(REGISTRY)


def method(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; one of {METHODS}") from None


def bind(name: str | BoundMethod, config: CircuitsConfig | None = None, **fields) -> BoundMethod:
    """`REGISTRY[name]` bound from `config` and `fields` (see Method.bind); a BoundMethod is returned as it is."""
    return name if isinstance(name, BoundMethod) else method(name).bind(config, **fields)


def reference(config: CircuitsConfig | None = None) -> BoundMethod:
    """The reference method (exact) bound from `config`."""
    (ref,) = [m for m in REGISTRY.values() if m.reference]
    return ref.bind(config)


def validated() -> list[Method]:
    """The methods compared with the reference under `circuits.validate`, in registry order."""
    return [m for m in REGISTRY.values() if m.validate]


def head_effects(model, batches: list[PairBatch], method: str | BoundMethod = "exact", steps: int = 5,
                 heads_per_forward: int = 32, probed: ProbedModel | None = None):
    """Scores of every head of `model` on `batches` by `method`: a BoundMethod, or a name bound with
    `eap_ig_steps=steps` and `heads_per_forward` (the other knobs at their CircuitsConfig defaults)."""
    if not isinstance(method, BoundMethod):
        method = bind(method, eap_ig_steps=steps, heads_per_forward=heads_per_forward)
    return method(model, batches, probed)

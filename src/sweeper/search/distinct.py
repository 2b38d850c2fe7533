"""Each point once: a sampler wrapper that keeps the study's trials distinct, and the
seed of each worker's stream.

Two workers (on one machine or many) that sample with the same seed propose the same
points, and a sampler that has converged on a small discrete space proposes the same
point again. Either way a trial would train what another trial already trains or
trained. :class:`DistinctSampler` wraps the study's sampler: when the parameters it
proposes for a trial are those of a running, queued, complete or pruned trial, it asks
again (up to ``tries`` times), then takes a point no trial has at random, when the space
is finite; a space whose every point has been tried ends the study (see
:func:`space_size`). ``search.allow_repeats=true`` turns this off. A failed trial's
point may be tried again (that is what ``search.retries`` does), and enqueued points
(``search.enqueue``, warm starts) are taken as given.

Workers claim trials under the study's lock, so the trials a worker compares with are
all there is.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from typing import Any

from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from sweeper.search.space import SearchSpace

LIVE_STATES = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE, TrialState.PRUNED)
SLOT_ATTR = "sweeper.worker_slots"  # study system attribute: how many workers have joined
MAX_POINTS = 100_000  # a finite space larger than this is treated as unbounded


def worker_seed(seed: int, slot: int) -> int:
    """The sampler seed of the study's ``slot``-th worker (0, 1, … in the order workers
    joined the study, across machines and resumes): ``seed`` itself for the first, so a
    one-worker study samples as ``Sampler(seed=seed)`` does; a distinct stream for every
    other."""
    if slot == 0:
        return int(seed)
    digest = hashlib.sha256(f"sweeper:{int(seed)}:{int(slot)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def join_study(storage: Any, study_id: int) -> int:
    """This worker's slot: the number of workers that joined the study before it. The
    caller holds the study's lock, so no two workers anywhere get the same slot."""
    attrs = storage.get_study_system_attrs(study_id)
    slot = int(attrs.get(SLOT_ATTR, 0))
    storage.set_study_system_attr(study_id, SLOT_ATTR, slot + 1)
    return slot


def point_key(params: dict[str, Any]) -> str:
    """A point's identity: its parameters as Optuna holds them (external values)."""
    return json.dumps(sorted(params.items()), default=str)


def _points(space: SearchSpace, index: int, decoded: dict[str, Any], raw: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if index == len(space.params):
        yield dict(raw)
        return
    p = space.params[index]
    if not p.active(decoded):
        yield from _points(space, index + 1, decoded, raw)
        return
    for value in p.grid():
        decoded[p.key], raw[p.key] = p.decode(value), value
        yield from _points(space, index + 1, decoded, raw)
    decoded.pop(p.key, None)
    raw.pop(p.key, None)


def space_points(space: SearchSpace, limit: int = MAX_POINTS) -> list[dict[str, Any]] | None:
    """Every point of a finite space (Optuna's external values, conditional parameters
    only where they apply), or None when it is unbounded (a float range without a step)
    or holds more than ``limit`` points."""
    if any(p.kind == "float" and p.step is None for p in space.params):
        return None
    points: list[dict[str, Any]] = []
    for point in _points(space, 0, {}, {}):
        points.append(point)
        if len(points) > limit:
            return None
    return points


def space_size(space: SearchSpace) -> int | None:
    points = space_points(space)
    return None if points is None else len(points)


class DistinctSampler(BaseSampler):
    """``inner``, except that a trial never gets the parameters of another live or
    finished trial while untried points remain (see the module's docstring)."""

    def __init__(self, inner: BaseSampler, space: SearchSpace, seed: int | None = None, tries: int = 20) -> None:
        self.inner = inner
        self.space = space
        self.tries = tries
        self._rng = random.Random(seed)
        self._points = space_points(space)
        self._relative: dict[int, dict[str, Any]] = {}
        self._planned: dict[int, dict[str, Any]] = {}

    def __str__(self) -> str:
        return f"Distinct({self.inner})"

    # -- what the inner sampler does, unchanged ---------------------------------------

    def infer_relative_search_space(self, study: Any, trial: FrozenTrial) -> dict[str, Any]:
        return self.inner.infer_relative_search_space(study, trial)

    def before_trial(self, study: Any, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._relative.pop(trial.number, None)
        self._planned.pop(trial.number, None)
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    # -- distinct points ------------------------------------------------------------

    def _taken(self, study: Any, trial: FrozenTrial) -> set[str]:
        return {point_key(t.params) for t in study.get_trials(deepcopy=False, states=LIVE_STATES)
                if t.number != trial.number and t.params}

    def _untried(self, taken: set[str]) -> dict[str, Any] | None:
        if self._points is None:
            return None
        free = [p for p in self._points if point_key(p) not in taken]
        return self._rng.choice(free) if free else None

    def _whole(self, values: dict[str, Any]) -> bool:
        """Whether ``values`` holds every parameter that applies to its point."""
        decoded = {k: self.space.decode({k: v})[k] for k, v in values.items()}
        return all(p.key in values for p in self.space.params if p.active(decoded))

    def sample_relative(self, study: Any, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        params = self.inner.sample_relative(study, trial, search_space)
        fixed = trial.system_attrs.get("fixed_params") or {}
        if params and not fixed and self._whole(params):
            # every parameter is relative (CMA-ES, GP, QMC …): the point is known here
            taken = self._taken(study, trial)
            if point_key(params) in taken:
                other = self._untried(taken)
                if other is not None and set(other) >= set(search_space):
                    params = {k: other[k] for k in search_space}
        self._relative[trial.number] = dict(params)
        return params

    def _sample(self, study: Any, trial: FrozenTrial, relative: dict[str, Any],
                fixed: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """One proposal for the whole point, and whether any of it was sampled here."""
        values: dict[str, Any] = {}
        decoded: dict[str, Any] = {}
        sampled = False
        for p in self.space.params:
            if not p.active(decoded):
                continue
            dist = p.distribution()
            if p.key in fixed:
                value = fixed[p.key]
            elif dist.single():
                from optuna.distributions import _get_single_value

                value = _get_single_value(dist)
            elif p.key in relative:
                value = relative[p.key]
            else:
                value = self.inner.sample_independent(study, trial, p.key, dist)
                sampled = True
            values[p.key] = value
            decoded[p.key] = p.decode(value)
        return values, sampled

    def _plan(self, study: Any, trial: FrozenTrial) -> dict[str, Any]:
        relative = self._relative.get(trial.number, {})
        fixed = trial.system_attrs.get("fixed_params") or {}
        taken = self._taken(study, trial)
        values: dict[str, Any] = {}
        for _ in range(max(1, self.tries)):
            values, sampled = self._sample(study, trial, relative, fixed)
            if point_key(values) not in taken or not sampled:
                break
        if point_key(values) in taken and not fixed:
            other = self._untried(taken)
            if other is not None and all(other.get(k) == v for k, v in relative.items() if k in other):
                values = other
        return values

    def sample_independent(self, study: Any, trial: FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        plan = self._planned.get(trial.number)
        if plan is None or param_name not in plan:
            plan = self._planned[trial.number] = self._plan(study, trial)
        if param_name in plan and param_distribution._contains(param_distribution.to_internal_repr(plan[param_name])):
            return plan[param_name]
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

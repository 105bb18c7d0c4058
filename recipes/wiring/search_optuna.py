"""Which candidates of a large [search] space to screen: Optuna, multi-objective and constrained.

When a space expands to more candidates than `search.max_candidates`, not every candidate's stand-in
is built. Optuna's TPE sampler proposes them in rounds of `search.trials_per_round`, and each round is
screened like a small space (recipes/measure/screen.py, in a nested scons run; recipes/wiring/sconsutil.py):
- the two objectives are the budget's objective measured on the stand-in (latency, size or memory:
  minimised) and the stand-in's parameter count (maximised: accuracy is not known before training,
  and capacity is what a smaller candidate gives up);
- the constraints are the shape budgets, as the relative amount each is exceeded by
  (`Trial.set_constraint`: <= 0 is feasible), so the sampler learns where the feasible region lies.
The search stops at max_candidates screened. The sampler is seeded and the screening stages are cached,
so a rebuild replays the same proposals with the same measured values: the choice is reproducible.

Optuna is imported here, and this module only when a space exceeds max_candidates, so no other build pays
for the import.
"""
from __future__ import annotations

from typing import Any

from recipes.measure.budget import OBJECTIVE_MEASURE
from recipes.measure.screen import SHAPE_BUDGETS

# A proposal the sampler keeps repeating is re-asked at most this many times per slot before the next
# unscreened candidate in the space's order is taken instead (stated in the plan's record).
MAX_REASKS = 50


class Planner:
    def __init__(self, profile: Any):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = profile.search
        self.budget = profile.budget
        self.models = sorted({c.model for c in profile.candidates})
        self.templates = [t.name for t in space.artifacts]
        self.names = {(c.model, c.template): c.artifact for c in profile.candidates}
        self.order = [c.artifact for c in profile.candidates]
        self.limit = space.max_candidates
        self.per_round = space.trials_per_round
        sampler = optuna.samplers.TPESampler(seed=space.seed, n_startup_trials=min(10, self.limit), multivariate=True)
        self.study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
        self.distributions = {"model": optuna.distributions.CategoricalDistribution(self.models),
                              "format": optuna.distributions.CategoricalDistribution(self.templates)}
        self.tried: list[str] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, Any] = {}
        self.fallbacks: list[str] = []

    def next_round(self) -> list[str]:
        """The next candidates to screen (empty once max_candidates have been)."""
        from optuna.trial import TrialState

        batch: list[str] = []
        room = min(self.per_round, self.limit - len(self.tried))
        while len(batch) < room:
            for _ in range(MAX_REASKS):
                trial = self.study.ask(self.distributions)
                name = self.names.get((trial.params["model"], trial.params["format"]))
                if name is not None and name not in self.tried and name not in batch:
                    self.pending[name] = trial
                    batch.append(name)
                    break
                if name in self.results:  # already screened: the sampler learns its known values again
                    self._tell(trial, self.results[name])
                else:                    # not a candidate (a model without that format), or pending in this round
                    self.study.tell(trial, state=TrialState.FAIL)
            else:
                name = next(n for n in self.order if n not in self.tried and n not in batch)
                self.fallbacks.append(name)
                batch.append(name)
        self.tried += batch
        return batch

    def tell(self, screened: dict[str, Any]) -> None:
        """The round's screen.json rows, by candidate name."""
        for row in screened["candidates"]:
            self.results[row["name"]] = row
            trial = self.pending.pop(row["name"], None)
            if trial is not None:
                self._tell(trial, row)

    def _tell(self, trial: Any, row: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        values = row["values"]
        objective = values.get(OBJECTIVE_MEASURE[self.budget.objective])
        if isinstance(objective, str):  # not measurable here (a device-only format): nothing to learn from it
            self.study.tell(trial, state=TrialState.FAIL)
            return
        # Optuna 5's constraint API (constraints_func is deprecated): <= 0 is feasible.
        for name, limit in sorted(self.budget.limits().items()):
            if name in SHAPE_BUDGETS and not isinstance(values[name], str):
                trial.set_constraint(name, (values[name] - limit) / limit)
        self.study.tell(trial, [float(objective), float(row["parameters"])])

    def record(self) -> dict[str, Any]:
        return {"sampler": "optuna TPESampler (multivariate, constrained, seeded)",
                "objectives": [f"minimise {OBJECTIVE_MEASURE[self.budget.objective]}", "maximise parameters"],
                "max_candidates": self.limit, "trials_per_round": self.per_round, "screened": list(self.tried),
                "not_screened": [n for n in self.order if n not in self.tried],
                "taken_in_order_after_repeated_proposals": self.fallbacks}

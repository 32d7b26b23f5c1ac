"""Optuna inside Ray Tune: ``make_sampler`` (by name, with the 'auto' choice) and an ``OptunaSearch`` that passes
each trial's constraint violation to Optuna, skips predicted-infeasible points without a trial and tells
early-stopped trials as pruned. Ray and Optuna are imported on use."""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterable
from typing import Any

from search_spaces import ResolvedSpace

from .settings import SAMPLERS, SKIPPED_JSON, SearchError

__all__ = ["SKIPPED_JSON", "make_sampler", "resolve_sampler"]

log = logging.getLogger(__name__)
# this driver process: a restored searcher recounts what trials.parquet holds once per process (a pid can repeat
# when a resumed driver starts in a fresh container, and the searcher's pickle carries the old one)
_PROCESS = uuid.uuid4().hex


def this_process() -> str:
    """This driver process's token. The searcher class is built at run time and cloudpickled into Ray's
    ``tuner.pkl`` by value, globals included: a method reading ``_PROCESS`` itself would see the FIRST driver's
    token after every ``--resume`` and never recount. A module-level function is pickled by reference, so this
    reads the current process's."""
    return _PROCESS


def startup_trials(num_samples: int) -> int:
    """Trials the model-based samplers (TPE, GP) draw independently before modelling."""
    return min(10, max(2, num_samples // 3))


def resolve_sampler(name: str, space: ResolvedSpace, num_samples: int) -> tuple[str, str]:
    """(sampler name, why) for ``--sampler``: 'auto' becomes grid for a grid space, GP for a small flat numeric
    space, else TPE; any other name is itself. The one place that decides what 'auto' means (the budget space
    is conditional, so it gets TPE: on held-out data GP was not shown better there, benchmarks/RESULTS.md)."""
    import optuna

    if name != "auto":
        return name, "chosen with --sampler"
    if space.grid is not None:
        return "grid", "the space is a grid"
    numeric = not any(isinstance(d, optuna.distributions.CategoricalDistribution) for d in space.distributions.values())
    if numeric and not space.conditional and num_samples <= 100:
        return "gp", "a small flat numeric space"
    return "tpe", "conditional or categorical parameters" if not numeric or space.conditional else "over 100 trials"


def make_sampler(name: str, seed: int | None, space: ResolvedSpace, num_samples: int) -> Any:
    """An Optuna sampler by name; 'auto': the grid sampler for a grid space, GP for a small flat numeric
    space, otherwise multivariate TPE (grouped for conditional spaces)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    startup = startup_trials(num_samples)
    name = resolve_sampler(name, space, num_samples)[0]
    if name == "grid":
        assert space.grid is not None
        return optuna.samplers.GridSampler(space.grid, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=space.conditional, constant_liar=True,
            n_startup_trials=startup,
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, num_samples // 3)))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")




RANDOM_SPLIT_AFTER = 2  # misses of one stratified target before its split is drawn at random instead
SPLIT_DRAWS = 200  # random splits tried for a target before it is given up


def reaching_split(space: Any, base: dict[str, Any], target: float, seeds: Iterable[int]) -> Any:
    """A budget-space probe (``search_spaces.ProbeTrial``: its ``suggestions``, the target among them, and the
    config ``params``) whose split reaches ``target``: one random split per seed (``search_spaces.sample_random``)
    until one is feasible and within the target's tolerance; None if no seed gives one. Why: a model-based sampler asked again for a stratified target that few splits
    reach (the lowest, at a small size) fits its model on the skipped points and proposes the same missing split
    each time; GP did so 50 times in a row and the search stopped with nothing trained."""
    from search_spaces import TARGET, sample_random, target_miss
    from trainables import assess

    for seed in seeds:
        probe = sample_random(space, 1, seed=seed, fixed={TARGET: target})[0]
        a = assess(probe.params, base)
        if a.feasible and not target_miss(target, a.run_flops_ratio):
            return probe
    return None


def _optuna_search_class() -> type:
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    from search_spaces import TARGET, config_params, target_miss, trial_params
    from trainables import assess

    from ..config import Config, apply_overrides
    from ..method.flops import predict
    from ..storage import exists, write_bytes
    from .rebuild import ENDED, lost_ended, moasha_stopped, orphans, take_over
    from .results import load_rows, load_trials
    from .study import record_told

    class SpfdeOptunaSearch(OptunaSearch):
        """OptunaSearch with three changes:

        - a point predicted infeasible (over the FLOPs budget, config rejected, impossible schedule) is told to
          Optuna at once as COMPLETE with a positive constraint (``set_constraint``: constraint-aware samplers
          learn to avoid it) and never becomes a Ray trial, so ``num_samples`` counts trained trials only; after
          ``max_skipped`` such points in a row the search stops (``Searcher.FINISHED``) and says why in
          ``skipped.json``;
        - an early-stopped trial (fewer epochs than planned) is told as PRUNED, never as a complete trial with
          partial metrics;
        - auxiliary space parameters (``search_spaces.AUXILIARY``) stay in Optuna but not in the trial's config
          (the budget space's target travels beside it, ``search_spaces.trial_params``);
        - a budget-space split whose predicted ratio misses its target (``search_spaces.target_miss``) is skipped
          like an infeasible point; a stratified first trial's target is queued again (``_retry_target``), so the
          stratification survives the resampling;
        - a point that trains the same run as a trial of this search (equal ``run_key``: method/plan.py's
          ``run_identity``, the config without the fields the plan alone reads, plus the plan) is never trained:
          Optuna is told the earlier trial's result (at once, or when that trial ends), it does not count toward
          ``num_samples`` and ``skipped.json`` lists it with ``duplicate_of`` (docs/search.md, "Duplicate runs").
        """

        skip_base: dict[str, Any] | None = None
        skip_budget: Any = None
        skip_fallback: float = 0.0
        max_skipped: int = 50
        state_uri: str | None = None

        def configure(self, base: dict[str, Any], budget: Any, fallback: float, max_skipped: int, state_uri: str | None,
                      num_samples: int = 0, table_uri: str | None = None) -> None:
            self.skip_base, self.skip_budget, self.skip_fallback = base, budget, fallback
            self.max_skipped, self.state_uri = max_skipped, state_uri
            self.skipped: list[dict[str, Any]] = []
            self.skip_streak = 0
            self.stop_reason = ""
            self.num_samples, self.table_uri = num_samples, table_uri
            self.trial_ids: list[str] = []  # Ray trials suggested (saved with Ray's snapshot, like the study)
            self._lost: tuple[str, int] | None = None  # (process, count): recounted once in each driver process
            self.run_keys: dict[str, str] = {}  # run key -> the trial that trains it (see _known_runs)
            self.followers: dict[str, list[Any]] = {}  # trial id -> Optuna trials of its duplicates, told when it ends
            self.table_outcomes: dict[str, dict[str, Any]] = {}  # trials known only from trials.parquet: their row
            self._runs_read: str | None = None  # the process that added trials.parquet's runs (once per process)

        def _lost_trials(self) -> int:
            """Trials of ``trials.parquet`` this (restored) searcher never suggested that ENDED: Ray's experiment
            snapshot predates them and the driver died. Their rows are kept (search/callbacks.py), so they count
            against num_samples; the unfinished ones are continued by new trials (``_adopt``), which count."""
            if self._lost is not None and self._lost[0] == this_process():
                return self._lost[1]
            n = 0
            if self.table_uri and exists(self.table_uri):
                try:
                    n = lost_ended(load_rows(self.table_uri), self.trial_ids or (), moasha_stopped(self._uri()))
                except Exception as e:  # a torn table: count nothing rather than fail the search
                    log.warning("could not read %s: %s", self.table_uri, e)
            self._lost = (this_process(), n)
            return n

        def _uri(self) -> str:
            return str(self.table_uri or "").rsplit("/", 1)[0]

        def _adopt(self) -> dict[str, tuple[str, dict[str, Any]]]:
            """Run key -> (trial id, params) of each trial that started and never ended outside this searcher (Ray's
            snapshot predates it: search/rebuild.py), read once per driver process, to be continued from its saved
            state by the trial that proposes the same run. A seeded sampler restored from the snapshot proposes the
            same points again in the same order (the ended ones are told as duplicates with their results), so the
            resumed search trains the configs an uninterrupted one would. Only with ``num_samples`` (the halving
            searcher keeps its own book of lost runs)."""
            found: dict[str, tuple[str, dict[str, Any]]] = self.__dict__.setdefault("orphan_runs", {})
            if (self.__dict__.get("_adopt_read") == this_process() or not self.num_samples or not self.table_uri
                    or getattr(self, "trial_ids", None) is None):  # a searcher pickled before trial ids: none known
                return found
            self._adopt_read = this_process()
            try:
                rows = load_rows(self.table_uri) if exists(self.table_uri) else []
                lost = orphans(rows, self.trial_ids or (), moasha_stopped(self._uri()))
            except Exception as e:  # a torn table: nothing to continue
                log.warning("could not read %s: %s", self.table_uri, e)
                return found
            for o in lost:
                try:
                    cfg = Config.parse(apply_overrides(self.skip_base or {}, config_params(o["params"])))
                    found[str(predict(cfg).run_key)] = (o["trial_id"], o["params"])
                except Exception as e:  # noqa: BLE001 - a config that no longer parses: left INTERRUPTED
                    log.warning("trial %s cannot be continued: %s", o["trial_id"], e)
            return found

        def _forced_orphan(self, trial_id: str) -> dict | str | None:
            """When the slots left are only enough for the orphans the sampler did not propose again (an unseeded
            or history-driven sampler): the next one's own parameters, on an Optuna trial asked with them; else
            None."""
            found = self._adopt()
            left = self.num_samples - len(self.trial_ids or ()) - self._lost_trials()
            if not found or left > len(found):
                return None
            key, (orphan, params) = next(iter(found.items()))
            self._ot_study.enqueue_trial(params, skip_if_exists=False)  # type: ignore[attr-defined]
            cfg = super().suggest(trial_id)
            if not isinstance(cfg, dict):
                return cfg
            del found[key]
            self._known_runs()[key] = trial_id
            self.trial_ids.append(trial_id)
            self._take_over(orphan, trial_id)
            return trial_params(params)

        def _take_over(self, orphan: str, trial_id: str) -> None:
            """Hand the orphan's saved state to the trial that continues it (search/rebuild.py ``take_over``)."""
            try:
                epoch = take_over(self._uri(), orphan, trial_id)
            except Exception as e:  # noqa: BLE001 - the trial then trains the same point anew
                log.warning("could not hand trial %s's state to trial %s: %s", orphan, trial_id, e)
                return
            log.info("trial %s continues trial %s (Ray's snapshot predates it) from epoch %d", trial_id, orphan, epoch)

        def _full(self) -> bool:
            ids = getattr(self, "trial_ids", None)  # None: a searcher pickled before trial_ids existed
            return bool(ids is not None and self.num_samples and len(ids) + self._lost_trials() >= self.num_samples)

        def _record_skip(self, params: dict[str, Any], reason: str, flops: float, duplicate_of: str = "") -> None:
            point = {"params": params, "reason": reason, "predicted_train_flops": flops}
            self.skipped.append({**point, "duplicate_of": duplicate_of} if duplicate_of else point)
            self._save_skips()
            self._record_told()

        def _record_told(self) -> None:
            """Copy what the sampler was told into the search's Optuna study on disk (search/study.py)."""
            url = self.__dict__.get("study_url")  # None: no record (a URI storage path, a searcher from before it)
            if url:
                record_told(url, str(self.__dict__.get("study_name")), self._ot_study,
                            {t.number: tid for tid, t in self._ot_trials.items()})

        def _save_skips(self) -> None:
            if self.state_uri:
                try:
                    dup = sum(1 for p in self.skipped if p.get("duplicate_of"))
                    doc = {"count": len(self.skipped) - dup, "duplicates": dup, "stop_reason": self.stop_reason,
                           "points": self.skipped}
                    write_bytes(self.state_uri, json.dumps(doc, default=str).encode())
                except Exception as e:
                    log.warning("could not write %s: %s", self.state_uri, e)

        def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]
            if self.skip_base is None:
                cfg = super().suggest(trial_id)
                return trial_params(cfg) if isinstance(cfg, dict) else cfg
            if self._full():
                return Searcher.FINISHED
            forced = self._forced_orphan(trial_id)
            if forced is not None:
                return forced
            while True:
                cfg = super().suggest(trial_id)
                if not isinstance(cfg, dict):
                    return cfg
                params = config_params(cfg)
                a = assess(params, self.skip_base, self.skip_budget, self.skip_fallback)
                miss = target_miss(float(cfg[TARGET]), a.run_flops_ratio) if TARGET in cfg and a.runnable else ""
                if a.feasible and not miss:
                    key = str(getattr(a.prediction, "run_key", "") or "")
                    runs = self._known_runs()
                    orphan = self._adopt().pop(key, None) if key else None  # a run Ray's snapshot lost: continued
                    if orphan is None and key and key in runs and runs[key] != trial_id:
                        original = runs[key]
                        self._tell_duplicate(self._ot_trials.pop(trial_id), original, a)
                        self._record_skip(params, f"the same run as trial {original}", float(a.run_train_flops),
                                          duplicate_of=original)
                        if self._stop_after_skip("duplicate"):
                            return Searcher.FINISHED
                        continue
                    self.skip_streak = 0
                    self.__dict__["streak_kinds"] = set()
                    if key:
                        runs[key] = trial_id
                    if getattr(self, "trial_ids", None) is not None:
                        self.trial_ids.append(trial_id)
                    if orphan is not None:
                        self._take_over(orphan[0], trial_id)
                    return trial_params(cfg)
                ot_trial = self._ot_trials.pop(trial_id)
                if miss:
                    a.reason, a.violation = miss, abs(float(a.run_flops_ratio or 0) / float(cfg[TARGET]) - 1)
                    if {TARGET: cfg[TARGET]} in (self._points_to_evaluate or []):  # a stratified first trial
                        self._retry_target(float(cfg[TARGET]))
                try:
                    ot_trial.set_constraint("spfde", float(max(a.violation, 1e-9)))
                    self._ot_study.tell(ot_trial, [0.0, float(a.run_train_flops)])  # type: ignore[attr-defined]
                except Exception as e:
                    log.debug("could not tell the skipped point: %s", e)
                self._record_skip(params, a.reason, float(a.run_train_flops))
                if self._stop_after_skip("infeasible", a.reason):
                    return Searcher.FINISHED

        def _stop_after_skip(self, kind: str, reason: str = "") -> bool:
            """Count an untrained point in the streak; True (the search stops, ``skipped.json`` says why) when the
            streak reaches ``max_skipped``, or when a grid sampler has no unstarted point left."""
            self.skip_streak += 1
            kinds = self.__dict__.setdefault("streak_kinds", set())
            kinds.add(kind)
            study: Any = self._ot_study
            is_exhausted = getattr(study.sampler, "is_exhausted", None)  # the grid sampler's
            exhausted = kind == "duplicate" and callable(is_exhausted) and bool(is_exhausted(study))
            if exhausted:
                self.stop_reason = ("every point of the grid was trained, skipped or is the same run as a trained "
                                    "trial; the search stopped")
            elif self.skip_streak < self.max_skipped:
                return False
            elif kinds == {"infeasible"}:
                self.stop_reason = (
                    f"the sampler proposed {self.skip_streak} predicted-infeasible points in a row (last: "
                    f"{reason}); the search stopped early. Loosen --flops-budget or narrow the space")
            elif kinds == {"duplicate"}:
                self.stop_reason = (
                    f"the sampler proposed {self.skip_streak} points in a row that train the same run as an earlier "
                    "trial; the search stopped early: the space holds few distinct runs. Lower -n or widen the space")
            else:
                self.stop_reason = (
                    f"the sampler proposed {self.skip_streak} points in a row that were predicted infeasible or train "
                    "the same run as an earlier trial; the search stopped early. Loosen --flops-budget or widen the space")
            self._save_skips()
            log.warning(self.stop_reason)
            return True

        def _known_runs(self) -> dict[str, str]:
            """Run key -> trial id of every run this search trained or is training. Pickled with the searcher (so
            with Ray's snapshot); once per driver process, the trials of ``trials.parquet`` it does not hold are
            added from their stored params: trials Ray's snapshot predates (the driver died after they started)
            and every trial of a search begun before run keys existed. A row of a trial that will never finish
            (lost while running) is left out: its config may train again."""
            runs: dict[str, str] = self.__dict__.setdefault("run_keys", {})
            if self.__dict__.get("_runs_read") == this_process() or not self.table_uri or not exists(self.table_uri):
                return runs
            self._runs_read = this_process()
            outcomes = self.__dict__.setdefault("table_outcomes", {})
            own, known = set(getattr(self, "trial_ids", None) or ()), set(runs.values())
            try:
                df = load_trials(self.table_uri)
            except Exception as e:  # a torn table: dedupe against what the searcher holds
                log.warning("could not read %s: %s", self.table_uri, e)
                return runs
            for row in df.to_dict("records"):
                tid = str(row["trial_id"])
                if tid in known or (tid not in own and row["status"] not in ENDED):
                    continue
                try:  # base + the row's params, as suggest builds a config (the row's config holds resolved
                    # execution settings, threads or precision, that a sampled point leaves to the base config)
                    params = config_params(json.loads(row["params"] or "{}"))
                    key = str(predict(Config.parse(apply_overrides(self.skip_base or {}, params))).run_key)
                except Exception as e:  # noqa: BLE001 - a row whose config no longer parses: not deduped against
                    log.debug("no run key for trial %s: %s", tid, e)
                    continue
                runs.setdefault(key, tid)
                if tid not in own:
                    outcomes[tid] = row
            return runs

        def _tell_duplicate(self, ot_trial: Any, original: str, a: Any) -> None:
            """Tell Optuna the duplicate's result: the original's, at once if it ended, else when it does."""
            if original in self._ot_trials:
                if original in self._completed_trials:
                    self._copy_outcome(ot_trial, original)
                else:
                    self.__dict__.setdefault("followers", {}).setdefault(original, []).append(ot_trial)
                return
            row = self.__dict__.get("table_outcomes", {}).get(original, {})  # a trial known from trials.parquet
            values = [float(a.run_train_flops) if m == "run_train_flops" else row.get(m) for m in self.metric]
            ok = row.get("status") == "COMPLETED" and bool(row.get("full_budget")) and all(
                isinstance(v, float) and math.isfinite(v) for v in values)
            state = "COMPLETE" if ok else "PRUNED" if row.get("status") == "EARLY_STOPPED" else "FAIL"
            self._tell(ot_trial, values if ok else None, state, {"spfde": float(a.violation)} if ok else {})

        def _copy_outcome(self, follower: Any, original: str) -> None:
            number = self._ot_trials[original].number
            frozen = next(t for t in self._ot_study.get_trials(deepcopy=False) if t.number == number)  # type: ignore[attr-defined]
            done = frozen.state.is_finished()
            self._tell(follower, frozen.values if done else None, frozen.state.name if done else "FAIL",
                       dict(frozen.constraints) if done else {})

        def _tell(self, ot_trial: Any, values: list[float] | None, state: str, constraints: dict[str, float]) -> None:
            import optuna

            try:
                for k, v in constraints.items():
                    ot_trial.set_constraint(k, float(v))
                self._ot_study.tell(ot_trial, values if state == "COMPLETE" else None,  # type: ignore[attr-defined]
                                    state=optuna.trial.TrialState[state])
            except Exception as e:
                log.debug("could not tell the duplicate point: %s", e)

        def _retry_target(self, target: float) -> None:
            """Ask again for a stratified target a split missed, so the stratification survives: another split
            from the sampler first, then (``RANDOM_SPLIT_AFTER`` misses on) a random split known to reach it;
            a target no random split reaches is given up."""
            misses = self.__dict__.setdefault("target_misses", {})  # a searcher pickled before it: none yet
            misses[target] = n = misses.get(target, 0) + 1
            point: dict[str, Any] = {TARGET: target}
            if n >= RANDOM_SPLIT_AFTER:
                probe = reaching_split(self._space, self.skip_base or {}, target,
                                       range(n * SPLIT_DRAWS, (n + 1) * SPLIT_DRAWS))
                if probe is None:
                    log.warning("no split of the space reaches %s=%.4g: that stratified target is given up",
                                TARGET, target)
                    return
                point = probe.suggestions
            self._ot_study.enqueue_trial(point)  # type: ignore[attr-defined]

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self._complete(trial_id, result, error)
            for follower in self.__dict__.get("followers", {}).pop(trial_id, []):  # its duplicates: the same result
                if trial_id in self._completed_trials:
                    self._copy_outcome(follower, trial_id)
            self._record_told()

        def _complete(self, trial_id: str, result: dict | None, error: bool) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            if result and result.get("diverged"):  # a terminal diverged result (trainables): FAIL, as an error was
                super().on_trial_complete(trial_id, result=None, error=True)
                return
            early = bool(result and not error and not result.get("infeasible")
                         and int(result.get("epoch") or 0) < int(result.get("epochs_total") or 0))
            if early:  # stopped by the scheduler: PRUNED (Ray's OptunaSearch tells PRUNED when no value is given)
                super().on_trial_complete(trial_id, result=None, error=False)
                return
            if ot_trial is not None and result and not error and trial_id not in self._completed_trials:
                v = result.get("constraint_violation")
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    try:
                        ot_trial.set_constraint("spfde", float(v))
                    except Exception as e:  # a repeated completion: the constraint is already set
                        log.debug("constraint not set for %s: %s", trial_id, e)
            super().on_trial_complete(trial_id, result=result, error=error)

    return SpfdeOptunaSearch


_SEARCH_CLS: type | None = None


def _search_cls() -> type:
    global _SEARCH_CLS
    if _SEARCH_CLS is None:
        _SEARCH_CLS = _optuna_search_class()
    return _SEARCH_CLS

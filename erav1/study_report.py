"""Reading the recipe study (:mod:`erav1.recipe_study`) for the book: a table of every trial, Optuna's plots."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING

from tqdm import TqdmWarning

with warnings.catch_warnings():  # optuna imports tqdm.auto, which warns on stderr in a notebook without ipywidgets
    warnings.simplefilter("ignore", TqdmWarning)
    import optuna
from optuna.distributions import BaseDistribution  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from erav1.published import published_file, published_summaries
from erav1.recipe_search import PUBLISHED_SEARCH
from erav1.recipe_study import KEPT_SEEDS, SPACE, STUDY_NAME, best_recipe, changed_options, one_lever_trials, tidy
from erav1.utils.rundir import CONFIG, ENVIRONMENT, HISTORY, read_json
from erav1.utils.text import Markdown, markdown_table, percent, recipe_changes, recipe_settings

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

NO_STUDY = "No recipe study has run yet: `scripts/search_recipe.py` starts one."
STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.RUNNING: "running",
    TrialState.FAIL: "fail",
    TrialState.WAITING: "waiting",
}
AXIS_LABELS = {  # (x, y) of draw_study's plots, in the study's own terms
    "optimization_history": ("trial", "validation accuracy (last epoch)"),
    "intermediate_values": ("epoch", "validation accuracy"),
}


PUBLISHED_STUDY = f"{PUBLISHED_SEARCH}/study.db"  # among the published files


def load_existing_study(
    storage: str | None = None, name: str = STUDY_NAME, data_dir: str | os.PathLike = "~/.cache/erav1"
) -> optuna.Study | None:
    """The study, or None where there is none (without creating an empty SQLite file on the way).

    ``storage`` None is the book's study: the clone's file, else the published one, downloaded into
    ``data_dir`` (Colab runs chapter 3 in an empty folder, without the repository).
    """
    if storage is None:
        path = published_file(PUBLISHED_STUDY, data_dir)
        if path is None:
            return None
        storage = f"sqlite:///{path}"
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).exists():
        return None
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _continues(trial: FrozenTrial) -> int | None:
    """The interrupted trial that this one resumes: Optuna's retry of a stale one, or the requeue after Ctrl-C.

    A retry copies the user attributes, so its own ``retry_history`` names the trial it follows more surely.
    """
    retried = trial.system_attrs.get("retry_history")
    return retried[-1] if retried else trial.user_attrs.get("resumes")


def _state(trial: FrozenTrial, resumed_as: dict[int, int]) -> str:
    """How the trial ended; one that another continues says which (a pruned one only where a pruner erred)."""
    if trial.number in resumed_as and trial.state in (TrialState.FAIL, TrialState.PRUNED):
        ended = "interrupted" if trial.state == TrialState.FAIL else "pruned"
        return f"{ended}, resumed as trial {resumed_as[trial.number]}"
    return STATES[trial.state]


def _best(study: optuna.Study) -> FrozenTrial | None:
    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


def describe_study(
    storage: str | None = None, name: str = STUDY_NAME, data_dir: str | os.PathLike = "~/.cache/erav1"
) -> Markdown:
    """Every trial: what its recipe changes from trial 0's, its last validation accuracy, how it ended, where.

    Trial 0 is the book's recipe (``scripts/search_recipe.py`` queues it first), so each row reads as an
    experiment on it. A queued trial shows the recipe it will train.
    """
    study = load_existing_study(storage, name, data_dir)
    if study is None or not study.trials:
        return Markdown(NO_STUDY)
    best = _best(study)
    reference = _recipe(study.trials[0])
    resumed_as = {number: t.number for t in study.trials if (number := _continues(t)) is not None}
    rows = []
    for trial in study.trials:
        steps = trial.intermediate_values
        last = percent(steps[max(steps)], 2) if steps else "-"
        number = f"**{trial.number}**" if best is not None and trial.number == best.number else str(trial.number)
        changes = recipe_changes(_recipe(trial), reference, "none (trial 0's recipe)")
        state, ran_on = _state(trial, resumed_as), trial.user_attrs.get("ran_on", "-")
        rows.append([number, changes, last, max(steps, default=0), state, ran_on])
    table = markdown_table(["trial", "changes to trial 0", "val acc (last epoch)", "epochs", "state", "ran on"], rows)
    verdict = (
        f" Trial {best.number} (in bold) has the best validation accuracy, {percent(best.value, 2)}."
        if best is not None
        else " No trial has finished yet."
    )
    if any(trial.state == TrialState.RUNNING for trial in study.trials):  # a snapshot cannot tell live from dead
        verdict += (
            " A running trial had not ended when the study was read: it trains still, or its worker stopped, and"
            " then the next worker to open the study finds its stale heartbeat and continues it."
        )
    return Markdown(
        f"{len(study.trials)} trials of the study `{study.study_name}`. Trial 0's recipe is "
        f"{recipe_settings(reference)}; every other row lists what its recipe changes." + verdict + "\n\n" + table
    )


def describe_confirmation(
    storage: str | None = None,
    name: str = STUDY_NAME,
    data_dir: str | os.PathLike = "~/.cache/erav1",
    kept: Path | None = None,
) -> Markdown:
    """The seeds of the best trial's recipe that have trained on all of train, each scored on test, so far.

    ``scripts/confirm_recipe.py`` keeps each seed among the published files as soon as it ends (on a CPU one
    seed takes a session), so the chapter shows them as they land; ``kept`` reads another folder instead.
    The test set only scores these runs: validation chose the recipe before the first one started.
    """
    from erav1.publish import CONFIRMATION_SEEDS, recipe_options
    from erav1.published import seeds_spread, seeds_table

    study = load_existing_study(storage, name, data_dir)
    best = _best(study) if study is not None else None
    if best is None:
        return Markdown("No trial of the study has finished, so no recipe is being confirmed yet.")
    recipe = best_recipe(study)
    seeds = [s for seed in range(CONFIRMATION_SEEDS) if (s := _kept_seed(seed, recipe, data_dir, kept)) is not None]
    intro = (
        f"Trial {best.number}'s recipe trains on all of train with seeds 0 to {CONFIRMATION_SEEDS - 1}, each "
        "scored on the test set, and the book publishes it with seed 0 (fixed before any of them trained) only "
        "once all of them have ended."
    )
    if not seeds:
        return Markdown(intro + " No seed has ended yet.")
    summaries = published_summaries(data_dir)  # the published one, then the one it replaced
    published = bool(summaries) and not changed_options(recipe_options(summaries[0]["recipe"]), recipe)
    table = seeds_table(seeds, 0, "published" if published else "to publish")
    if len(seeds) < CONFIRMATION_SEEDS:
        ended = f"{len(seeds)} of the {CONFIRMATION_SEEDS} seeds {'has' if len(seeds) == 1 else 'have'} ended"
        return Markdown(f"{intro} {ended}:\n\n{table}")
    against = _against_the_replaced_recipe(recipe, seeds, summaries)
    return Markdown(f"{intro} All of them have ended:\n\n{table}\n\n{seeds_spread(seeds)}{against}")


def describe_published_seeds(
    storage: str | None = None,
    name: str = STUDY_NAME,
    data_dir: str | os.PathLike = "~/.cache/erav1",
    summary: dict | None = None,
) -> Markdown:
    """The published recipe's seeds (``published.describe_seeds``), without repeating the confirmation's table.

    Where the published recipe is the study's best trial's, its seeds are the ones ``describe_confirmation``
    shows, so this says what they add up to and which one is published; any other recipe gets its table.
    """
    from erav1.publish import recipe_options, summary_seeds
    from erav1.published import describe_seeds, published_seed, published_summary, seeds_verdict

    summary = summary or published_summary(data_dir)
    study = load_existing_study(storage, name, data_dir)
    best = _best(study) if study is not None else None
    if best is None or changed_options(recipe_options(summary["recipe"]), best_recipe(study)):
        return describe_seeds(data_dir, summary)
    return Markdown(
        f"The published recipe is trial {best.number}'s, so its seeds are the ones its confirmation trained "
        f"(the table above). {seeds_verdict(summary_seeds(summary))}{published_seed(summary)}"
    )


def _against_the_replaced_recipe(recipe: dict[str, object], seeds: list[dict], summaries: list[dict]) -> str:
    """How the confirmed seeds compare with those of the published recipe they replace: the point of the search."""
    from erav1.publish import recipe_options, summary_seeds

    for summary in summaries:
        options = recipe_options(summary["recipe"])
        changed = changed_options(options, recipe)
        if changed:
            break
    else:
        return ""
    old, new = [r["test_accuracy"] for r in summary_seeds(summary)], [r["test_accuracy"] for r in seeds]
    gap = fmean(new) - fmean(old)
    every = ", and its lowest seed is above that recipe's highest" if min(new) > max(old) else ""
    return (
        f" The published recipe it replaces ({recipe_settings({name: options[name] for name in changed})}) ended "
        f"at a mean of {percent(fmean(old), 2)} over its {len(old)} seed{'s' * (len(old) > 1)}: this one's mean is "
        f"{abs(100 * gap):.2f} points {'higher' if gap > 0 else 'lower'}{every}."
    )


def _kept_seed(seed: int, recipe: dict[str, object], data_dir: str | os.PathLike, kept: Path | None) -> dict | None:
    """A kept seed's row of the seed table, if it trained ``recipe`` to its end (one of an earlier best did not)."""
    from erav1.publish import record_of, seed_fields

    contents = []
    for part in (CONFIG, ENVIRONMENT, HISTORY):
        file = f"seed{seed}.{part}"
        path = kept / file if kept is not None else published_file(f"{KEPT_SEEDS}/{file}", data_dir)
        if path is None or not path.is_file():
            return None
        contents.append(read_json(path))
    config, environment, history = contents
    if changed_options(config, recipe) or len(history) < config["epochs"]:
        return None
    return seed_fields(record_of(config, environment, history))


def _recipe(trial: FrozenTrial) -> dict[str, object]:
    """The trial's parameters, or those a queued trial waits with; 0.3 rather than 0.30000000000000004."""
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    return {name: tidy(value) for name, value in params.items()}


@dataclass(frozen=True)
class LeverEffect:
    """One lever changed alone: its trial's validation accuracy against trial 0's at the same epoch.

    A complete trial is compared at the last epoch; a pruned one where the pruner stopped it, since
    trial 0 stood elsewhere at that epoch than at the end.
    """

    change: dict[str, object]
    trial: int
    epoch: int
    accuracy: float
    reference: float
    pruned: bool

    @property
    def points(self) -> float:
        return 100 * (self.accuracy - self.reference)


def lever_effects(
    storage: str | None = None, name: str = STUDY_NAME, data_dir: str | os.PathLike = "~/.cache/erav1"
) -> list[LeverEffect]:
    """What each lever of the study's first trials did alone; levers whose trial has not finished are left out."""
    study = load_existing_study(storage, name, data_dir)
    if study is None:
        return []
    (_, reference), *single = one_lever_trials(study)
    if reference is None or reference.state != TrialState.COMPLETE:
        return []
    effects = []
    for change, trial in single:
        if trial is None or not trial.intermediate_values:
            continue
        epoch = max(trial.intermediate_values)
        effects.append(
            LeverEffect(
                change={key: tidy(value) for key, value in change.items()},
                trial=trial.number,
                epoch=epoch,
                accuracy=trial.intermediate_values[epoch],
                reference=reference.intermediate_values[epoch],
                pruned=trial.state == TrialState.PRUNED,
            )
        )
    return effects


def draw_lever_effects(
    storage: str | None = None, name: str = STUDY_NAME, data_dir: str | os.PathLike = "~/.cache/erav1"
) -> Figure | None:
    """A bar for each lever changed alone (:func:`lever_effects`); None, which a cell shows as nothing, before any."""
    from erav1.utils.plots import plot_lever_effects

    effects = lever_effects(storage, name, data_dir)
    return plot_lever_effects(effects) if effects else None


def describe_lever_effect(
    change: Mapping[str, object],
    storage: str | None = None,
    name: str = STUDY_NAME,
    data_dir: str | os.PathLike = "~/.cache/erav1",
) -> Markdown:
    """What the study measured for one lever changed alone, for a chapter that explains the lever (chapter 1's fill)."""
    settings = recipe_settings(change)
    effect = next((e for e in lever_effects(storage, name, data_dir) if e.change == dict(change)), None)
    if effect is None:
        return Markdown(f"Chapter 3's recipe study has not yet finished its trial of {settings} alone.")
    if effect.pruned:
        ended = (
            f"was stopped by the pruner at epoch {effect.epoch} with {percent(effect.accuracy, 2)} validation "
            f"accuracy, where trial 0 stood at {percent(effect.reference, 2)}"
        )
    else:
        ended = (
            f"ended at {percent(effect.accuracy, 2)} validation accuracy, against trial 0's "
            f"{percent(effect.reference, 2)}"
        )
    return Markdown(
        f"In chapter 3's recipe study, trial 0's recipe with {settings} and nothing else changed (trial "
        f"{effect.trial}) {ended}: {effect.points:+.2f} points, one seed each."
    )


def draw_study(
    storage: str | None = None, name: str = STUDY_NAME, data_dir: str | os.PathLike = "~/.cache/erav1"
) -> tuple[dict[str, Axes], Markdown | None]:
    """Optuna's own plots of the study (the best value so far, every trial's curve, what mattered), and a note.

    A notebook shows every figure a cell leaves open, so chapter 3 calls this and sees the plots inline.
    The note is None when there is nothing to add, so that chapter 3's cell shows no empty output. Without a
    study there is nothing to draw: ``describe_study`` has said so.
    """
    from optuna.visualization import matplotlib as plots

    study = load_existing_study(storage, name, data_dir)
    if study is None or not study.trials:
        return {}, None
    figures = {
        "optimization_history": plots.plot_optimization_history,
        "intermediate_values": plots.plot_intermediate_values,
    }
    notes = []
    varied = _varied_params(study)
    if len(varied) >= 2:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        figures["param_importances"] = lambda s: plots.plot_param_importances(
            complete_in_space(s), evaluator=evaluator, params=varied
        )
    else:
        notes.append(_no_importances(varied))
    with warnings.catch_warnings():  # Optuna's matplotlib plots are "experimental" since Optuna 2.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        drawn = {figure_name: plot(study) for figure_name, plot in figures.items()}
    for figure_name, (x, y) in AXIS_LABELS.items():  # Optuna's generic "Objective Value" and "Step"
        drawn[figure_name].set(xlabel=x, ylabel=y)
    return drawn, Markdown("\n\n".join(notes)) if notes else None


def save_study_plots(out: Path, storage: str | None = None, name: str = STUDY_NAME) -> Markdown:
    """:func:`draw_study`'s plots as PNGs in ``out``, for a terminal; the Markdown links them."""
    import matplotlib.pyplot as plt

    drawn, note = draw_study(storage, name)
    if not drawn:
        return Markdown(NO_STUDY)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for figure_name, axes in drawn.items():
        path = out / f"{figure_name}.png"
        axes.figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(axes.figure)
        lines.append(f"![{figure_name.replace('_', ' ')}]({path})")
    return Markdown("\n\n".join([*lines, note] if note else lines))


def complete_in_space(study: optuna.Study, space: Mapping[str, BaseDistribution] = SPACE) -> optuna.Study:
    """The complete trials, in memory, each with the space's distributions wherever they hold its values.

    A trial keeps the distribution it was suggested from, and Optuna's importances refuse a parameter whose
    distribution differs between trials. The study widened Cutout p's range on the way (see
    :class:`erav1.recipe_study.KnownSpaceTPE`); the earlier values lie in the wider range.
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory" is no news under a plot
    try:
        view = optuna.create_study(study_name=study.study_name, direction=study.direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        widened = trial.distributions | {name: space[name] for name in trial.distributions if name in space}
        try:
            trial = optuna.trial.create_trial(params=trial.params, distributions=widened, value=trial.value)
        except ValueError:  # a value outside today's space (a range that narrowed): the trial keeps its own
            pass
        view.add_trial(trial)
    return view


def _varied_params(study: optuna.Study) -> list[str]:
    """The parameters that take more than one value over the complete trials, if their accuracies differ.

    Importances can only rank these: fANOVA's forest also hands shares to parameters that every complete
    trial set alike (on this study's first two trials, which differ in ``ema_decay`` alone, it gave ``lr`` more
    than ``ema_decay``), and those shares say nothing about the trials.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len({t.value for t in complete}) < 2:
        return []
    return [name for name in complete[0].params if len({repr(t.params.get(name)) for t in complete}) > 1]


def _no_importances(varied: list[str]) -> str:
    """Why chapter 3 shows no importances yet: nothing varied, or one parameter explains every difference alone."""
    if not varied:
        return "No parameter importances yet: they need complete trials whose parameters and accuracies differ."
    return (
        f"No parameter importances yet: of the complete trials' parameters only `{varied[0]}` varies, so it "
        "explains every difference by itself. Importances rank two or more."
    )

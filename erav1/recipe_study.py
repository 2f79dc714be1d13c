"""The recipe search, run by Optuna: one study, every trial a real ``erav1 train`` on a validation split.

Each trial trains the fixed model (ResNet18, RandomCrop + Cutout, a fixed seed and number of epochs) on 90%
of the train images with a recipe that Optuna's sampler suggests, and reports the held-out 10%'s accuracy
after every epoch, so that the pruner can stop a hopeless recipe half way. The test set chooses nothing.

The study lives in an RDB (SQLite under ``book/results/recipe_search/`` by default, any SQLAlchemy URL for
workers on several machines). A trial's run directory is named from its parameters, so a trial whose
worker died (a lease ended) is found by its stale heartbeat, queued again with the same parameters, and
resumes the same run directory with ``erav1 train --resume``. :mod:`erav1.study_report` reads the study.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import TqdmWarning

with warnings.catch_warnings():  # optuna imports tqdm.auto, which warns on stderr in a notebook without ipywidgets
    warnings.simplefilter("ignore", TqdmWarning)
    import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from erav1.errors import Erav1Error
from erav1.recipe_search import PUBLISHED_SEARCH, SEARCH_DIR, VAL_FRACTION
from erav1.utils import rundir
from erav1.utils.checkpoint import atomic_copy, atomic_write_json, load_checkpoint, save_fp16_weights

STORAGE = f"sqlite:///{SEARCH_DIR / 'study.db'}"
STUDY_NAME = "recipe"
KEPT_SEEDS = f"{PUBLISHED_SEARCH}/confirm"  # among the published files: each confirmation seed as it ends
RUNS = Path("runs/study")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
INTERRUPTED = 130  # what `erav1 train` exits with after Ctrl-C or SIGTERM, its last.pt whole

# The levers `erav1 train` already has, around the recipe the book trains with (Config's defaults).
# Steps keep every value short enough to name a run directory by, and give repeated recipes the same one.
# The committed study goes on in this space: a float range may widen, but Optuna refuses a new trial whose lever
# changed kind or, for a categorical one, its choices (a smaller batch size would need a new study).
SPACE: dict[str, BaseDistribution] = {
    "batch_size": CategoricalDistribution([256, 512, 1024]),
    "lr": FloatDistribution(0.1, 0.8, step=0.05),  # the OneCycle peak
    "pct_start": FloatDistribution(0.1, 0.4, step=0.05),  # the warm-up's share of training
    "momentum": FloatDistribution(0.8, 0.95, step=0.05),
    "nesterov": CategoricalDistribution([True, False]),
    "weight_decay": FloatDistribution(1e-4, 1e-3, step=1e-4),
    "decay_norm_and_bias": CategoricalDistribution([True, False]),
    # Cutout on a quarter of the images at least: the rules keep it among the augmentations. The floor was 0.5
    # until the one-lever trial at 0.5 beat every other recipe; a best value on the edge asks to look past it.
    "cutout_p": FloatDistribution(0.25, 1.0, step=0.25),
    "label_smoothing": FloatDistribution(0.0, 0.2, step=0.05),
    "cutout_fill": CategoricalDistribution(["zero", "mean"]),
    "zero_init_residual": CategoricalDistribution([False, True]),
    # The EMA remembers about 1 / (1 - decay) steps: 100, 200 or 500, i.e. 1, 2 or 6 epochs of the 88 steps an
    # epoch has at batch 512 (half as many epochs at 1024, twice as many at 256), of a 20-epoch run of 1760 steps.
    # 0.999 (1000 steps, over half the run) would average in the weights of OneCycle's high-LR middle.
    "ema_decay": CategoricalDistribution([0.0, 0.99, 0.995, 0.998]),
}


# The first trials after the reference change one lever each, so that a lease of about ten trials already says
# which levers matter, and the sampler starts from them rather than from random recipes. They run in this order,
# the levers expected to matter most first, because a lease may end before the last of them. The model underfits
# (its train accuracy on augmented batches stays near the test accuracy), so four of them take regularisation away.
# Half the batch size doubles the steps of the 20 epochs; its peak lr halves with it (linear scaling, Goyal et al.
# 2017), so that each image moves the weights as far as at batch 512.
ONE_LEVER_AT_A_TIME: tuple[dict[str, Any], ...] = (
    {"ema_decay": 0.995},
    {"batch_size": 256, "lr": 0.2},
    {"cutout_p": 0.5},
    {"label_smoothing": 0.0},
    {"decay_norm_and_bias": False},
    {"cutout_p": 0.25},
    {"cutout_fill": "mean"},
    {"zero_init_residual": True},
    {"pct_start": 0.15},
)


class RetryOnce(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a stale trial, queued once even when two of this worker's threads both failed it.

    Every thread of ``optimize`` fails the stale trials before it asks for one. Optuna marks a trial failed by
    reading its row and writing it back, with no row lock on SQLite between the two (as in optuna#4002), so
    two threads could both fail the same trial, and each queued a retry: the same run queued twice (it
    happened to the book's study, after a lease ended). Several processes on one study need a server database.
    """

    def __init__(self, max_retry: int | None = None) -> None:
        super().__init__(max_retry)
        self._lock = threading.Lock()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with self._lock:
            retried = (t.system_attrs.get("retry_history", []) for t in study.get_trials(deepcopy=False))
            if not any(trial.number in history for history in retried):
                super().__call__(study, trial)


class KnownSpaceTPE(optuna.samplers.TPESampler):
    """Multivariate TPE over a search space given in advance, so that a lever whose range widened stays in it.

    Optuna infers the joint space from the trials and keeps a lever only where every trial was suggested from
    the same distribution. This study widened one range on the way (Cutout p's floor, from 0.5 to 0.25, once 0.5
    had won), so inferring it would drop the lever that mattered most from the joint model for good and sample
    it alone. The space is known, and every earlier value lies inside it.
    """

    def __init__(self, space: Mapping[str, BaseDistribution], **kwargs: Any) -> None:
        super().__init__(multivariate=True, **kwargs)
        self.space = {name: distribution for name, distribution in space.items() if not distribution.single()}

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self.space)


class TrainingFailed(Erav1Error):
    """``erav1 train`` ended with an error (diverged, out of memory): the trial fails, the study goes on."""


@dataclass(frozen=True)
class StudySettings:
    """What every trial's ``erav1 train`` shares; ``train_args`` pass through to it (e.g. ``--precision fp32``)."""

    data: str
    runs: Path = RUNS
    epochs: int = 20
    seed: int = 0
    device: str = "auto"
    data_dir: str = "~/.cache/erav1"
    train_args: tuple[str, ...] = ()
    launcher: tuple[str, ...] = (sys.executable, "-m", "erav1")  # or ("torchrun", "--nproc-per-node=2", "-m", ...)
    poll_s: float = 2.0


class JudgedAt(optuna.pruners.BasePruner):
    """Ask ``pruner`` only at the given epochs (steps), and let a trial go on at every other one.

    A thin wrapper, as Optuna's own ``PatientPruner`` is: the judging stays the wrapped pruner's.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, epochs: Iterable[int]) -> None:
        self.pruner, self.epochs = pruner, frozenset(epochs)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.last_step in self.epochs and self.pruner.prune(study, trial)


def default_pruner(epochs: int = 20) -> optuna.pruners.BasePruner:
    """Stop a trial that is in the bottom quarter of the finished trials, judged at half-way and at three quarters.

    OneCycle recipes differ most in the first half (a high peak LR scores low there, then overtakes while
    the LR anneals), so no trial is judged before half of its epochs, nor before 5 trials have finished to
    compare with. Nor in the last quarter: stopping there saves at most a quarter of a trial and loses its
    result, and the annealing reorders the trials most in those epochs (the book's trial 17 was stopped at
    epoch 19 of 20, 0.04 points below the bottom quarter, when the rule judged every epoch from half-way on).
    Optuna compares the trial's best epoch so far with the others at the same epoch. The bottom quarter rather
    than the bottom half (the median) keeps the late bloomers a median would cut. Optuna's percentile is the
    share it keeps from the top: 75 keeps three quarters.
    """
    percentile = optuna.pruners.PercentilePruner(75.0, n_startup_trials=5)
    return JudgedAt(percentile, epochs=(epochs // 2, 3 * epochs // 4))


def open_study(
    storage: str = STORAGE,
    name: str = STUDY_NAME,
    pruner: optuna.pruners.BasePruner | None = None,
    seed: int | None = None,
    heartbeat_interval: int = 30,
    grace_period: int = 120,
    planned: Sequence[Mapping[str, Any]] = (),
    space: Mapping[str, BaseDistribution] = SPACE,
) -> optuna.Study:
    """Create the study, or load it to continue; a trial without a heartbeat for ``grace_period`` s is retried.

    The retry is Optuna's own: the stale trial fails and a new one with its parameters is queued, which
    resumes the stale trial's run directory. The ``planned`` trials run first, in order (see
    :func:`ask_in_order`). TPE's constant liar keeps parallel trials apart, and its
    multivariate model learns levers that act together (the peak lr with the batch size it should scale
    with, and with its warm-up share) rather than each one alone, over ``space`` (:class:`KnownSpaceTPE`).
    """
    if storage.startswith("sqlite:///"):
        write_ahead_log(Path(storage.removeprefix("sqlite:///")))
    with warnings.catch_warnings():  # heartbeats, the constant liar and multivariate TPE are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(
            storage,
            engine_kwargs={"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else None,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryOnce(max_retry=3),
        )
        sampler = KnownSpaceTPE(space, seed=seed, constant_liar=True)
    study = optuna.create_study(
        storage=rdb,
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        sampler=sampler,
        pruner=pruner or default_pruner(),
    )
    return ask_in_order(study, planned)


def write_ahead_log(database: Path) -> None:
    """Put the SQLite file in write-ahead-log mode, which the file keeps.

    In SQLite's default mode a commit waits until no connection is reading. The heartbeat thread and a
    trial's thread of one worker then lock each other out, and one of them fails with "database is locked"
    (optuna#4994). With the log, readers never block a commit; writers still take turns.
    """
    database.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(database, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def ask_in_order(study: optuna.Study, planned: Sequence[Mapping[str, Any]] = ()) -> optuna.Study:
    """Make this process's threads take trials one at a time, and an interrupted trial before a new one.

    Optuna takes a queued trial (a planned one, a retried stale one) by reading it as waiting and then
    marking it running, under a row lock that SQLite does not have (optuna#4002). Two threads could
    both take it, and train the same recipe twice into one run directory. A lock around ``ask`` closes
    the race in this process; several processes or machines need a server database (PostgreSQL, MySQL),
    whose row locks Optuna uses.

    Optuna takes queued trials oldest first. Were all the planned trials queued at once, a trial queued
    again after an interruption would wait behind every one of them, and each ended lease would leave
    one more run half-trained. So the next planned trial is queued only when no other trial waits.
    """
    lock, ask = threading.Lock(), study.ask

    def ask_next(*args: Any, **kwargs: Any) -> optuna.Trial:
        with lock:
            queue_next(study, planned)
            return ask(*args, **kwargs)

    study.ask = ask_next  # type: ignore[method-assign]  # optimize() asks through the instance
    return study


def queue_next(study: optuna.Study, planned: Sequence[Mapping[str, Any]]) -> None:
    """Queue the first planned trial that the study has never held, unless a trial already waits."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return
    held = [t.system_attrs.get("fixed_params", t.params) for t in trials]  # a queued trial has no params yet
    unheld = next((dict(params) for params in planned if dict(params) not in held), None)
    if unheld is not None:
        study.enqueue_trial(unheld)


def reference_recipe(space: Mapping[str, BaseDistribution] = SPACE) -> dict[str, Any]:
    """The book's recipe when the study began, in the search space: the study's first trial, a yardstick.

    That is Config's defaults as they were then (``SUPERSEDED_DEFAULTS``): some have since moved to the study's
    confirmed winner, and every lever must still be compared with the same trial 0.
    """
    from erav1.main import first_defaults

    defaults = first_defaults()
    return {name: defaults[name] for name in space}


def first_trials(space: Mapping[str, BaseDistribution] = SPACE) -> list[dict[str, Any]]:
    """The reference recipe, then the reference with one lever changed (ONE_LEVER_AT_A_TIME), in that order."""
    reference = reference_recipe(space)
    return [reference, *(reference | change for change in ONE_LEVER_AT_A_TIME)]


def one_lever_trials(
    study: optuna.Study, space: Mapping[str, BaseDistribution] = SPACE
) -> list[tuple[dict[str, Any], optuna.trial.FrozenTrial | None]]:
    """Each of :func:`first_trials`' changes (``{}`` for the reference) with its last finished trial, or None.

    An interrupted trial, or one a pruner stopped in error, continues as a later trial with the same recipe,
    so the last finished one has the final word.
    """
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    changes = ({}, *ONE_LEVER_AT_A_TIME)
    return [
        (change, next((t for t in reversed(finished) if t.params == params), None))
        for change, params in zip(changes, first_trials(space), strict=True)
    ]


def winners_combined(study: optuna.Study, space: Mapping[str, BaseDistribution] = SPACE) -> dict[str, Any] | None:
    """The reference with every one-lever change that beat it on validation, once all of them have finished.

    One lever at a time says which levers help alone; this trial asks whether they add up. Only complete
    trials count (a pruned one trailed its peers), and it takes winners on two levers or more to make a new
    recipe. Where two values of one lever both won (Cutout p 0.5 and 0.25), the better one is taken.
    """
    (_, reference), *single = one_lever_trials(study, space)
    if reference is None or reference.state != TrialState.COMPLETE or any(trial is None for _, trial in single):
        return None
    winners = sorted(
        (
            (trial.value, change)
            for change, trial in single
            if trial.state == TrialState.COMPLETE and trial.value > reference.value
        ),
        key=lambda winner: winner[0],
    )
    if len({frozenset(change) for _, change in winners}) < 2:
        return None
    recipe = reference_recipe(space)
    for _, change in winners:  # the best last: of two values of one lever, it is the one that stays
        recipe |= change
    return recipe


class QueueWinnersCombined:
    """Optuna callback: after each trial, queue :func:`winners_combined` once it exists (and only once)."""

    def __init__(self, space: Mapping[str, BaseDistribution] = SPACE) -> None:
        self.space, self.lock = space, threading.Lock()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with self.lock:  # the n_jobs threads call it; skip_if_exists spans processes and restarts
            combined = winners_combined(study, self.space)
            if combined is not None:
                study.enqueue_trial(combined, user_attrs={"combines": "the one-lever winners"}, skip_if_exists=True)


def run_study(
    study: optuna.Study,
    settings: StudySettings,
    trials: int,
    jobs: int = 1,
    space: Mapping[str, BaseDistribution] = SPACE,
    callbacks: tuple[Callable[[optuna.Study, optuna.trial.FrozenTrial], None], ...] = (),
) -> None:
    """Run trials, ``jobs`` at a time on this machine, until the study holds ``trials`` finished ones.

    ``trials`` counts the whole study (complete or pruned), whichever worker ran them, so a restarted
    or added worker runs only what is missing. ``callbacks`` run after every trial (Optuna's).
    """
    missing = trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    if missing <= 0:
        return
    study.optimize(
        lambda trial: objective(trial, settings, space),
        n_trials=missing,
        n_jobs=jobs,
        catch=(TrainingFailed,),
        callbacks=[optuna.study.MaxTrialsCallback(trials, states=FINISHED), *callbacks],
    )


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    assert isinstance(distribution, FloatDistribution), distribution
    return tidy(
        trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    )


def tidy(value: Any) -> Any:
    """A float without the step's binary noise (0.30000000000000004 -> 0.3), so that run names stay short."""
    return round(value, 6) if isinstance(value, float) else value


def run_name(params: Mapping[str, Any]) -> str:
    """``{"batch_size": 512, "lr": 0.4}`` -> ``batch_size=512+lr=0.4``: the same recipe, the same folder."""
    return "+".join(
        f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items()
    )


def cli_flags(options: Mapping[str, Any]) -> list[str]:
    """``{"cutout_p": 0.5, "flip": False}`` -> ``["--cutout-p", "0.5", "--no-flip"]``."""
    flags = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            flags += [flag, str(value)]
    return flags


def objective(trial: optuna.Trial, settings: StudySettings, space: Mapping[str, BaseDistribution] = SPACE) -> float:
    """Train the trial's recipe (or resume its run), reporting validation accuracy after every epoch."""
    params = {name: suggest(trial, name, distribution) for name, distribution in space.items()}
    run_dir = settings.runs / run_name(params)
    trial.set_user_attr("run", run_dir.name)  # its folder under --runs: the committed study names no machine's path
    options = {
        "data": settings.data,
        "epochs": settings.epochs,
        "val_fraction": VAL_FRACTION,
        "seed": settings.seed,
        **params,
    }
    with run_lock(run_dir) as lock:
        history = train_and_report(trial, train_command(run_dir, options, settings), run_dir, lock, settings.poll_s)
    return history[-1]["val_acc"]


@contextmanager
def run_lock(run_dir: Path) -> Iterator[int]:
    """One trainer per run directory: a repeated recipe waits for its twin, then reads the finished run.

    ``erav1 train`` inherits the lock, so a trainer orphaned by a killed worker keeps it until it ends.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def train_command(run_dir: Path, options: dict[str, Any], settings: StudySettings) -> list[str]:
    """Start the run, or continue it when an earlier trial with these parameters left one there."""
    common = ["--device", settings.device, "--data-dir", settings.data_dir, "--no-progress"]
    if not (run_dir / rundir.CONFIG).exists():
        return [
            *settings.launcher,
            "train",
            "--run-dir",
            str(run_dir),
            *common,
            *cli_flags(options),
            *settings.train_args,
        ]
    check_same_run(run_dir, options)
    return [*settings.launcher, "train", "--resume", str(run_dir), *common]


def check_same_run(run_dir: Path, options: Mapping[str, Any]) -> None:
    """Refuse to continue (or reuse) a run in ``run_dir`` that trained other options than ``options``."""
    changed = changed_options(rundir.read_json(run_dir / rundir.CONFIG), options)
    if changed:
        raise Erav1Error(
            f"{run_dir} holds a run with other {', '.join(changed)} than this study's; "
            "give the study its own --runs folder"
        )


def changed_options(config: Mapping[str, Any], options: Mapping[str, Any]) -> list[str]:
    """The options that a run's saved config trained with other values than ``options``."""
    return sorted(name for name, value in options.items() if config.get(name) != value)


def train_and_report(trial: optuna.Trial, command: list[str], run_dir: Path, lock: int, poll_s: float) -> list[dict]:
    """Run ``command``; report each epoch of its history.json as it lands; prune it when Optuna says so."""
    earlier = len(read_history(run_dir))  # a resumed run's epochs, trained before, maybe on another machine
    with open(run_dir / "train.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, pass_fds=(lock,))
    history: list[dict] = []
    try:
        while True:
            ended = process.poll() is not None  # before reading, so that the last epoch is never missed
            for record in read_history(run_dir)[len(history) :]:
                history.append(record)
                if len(history) == earlier + 1:  # this trainer's first epoch: it wrote environment.json before it
                    trial.set_user_attr("ran_on", ran_on(run_dir))
                trial.report(record["val_acc"], record["epoch"])
                if not ended and trial.should_prune():  # an ended run has nothing left to save
                    stop(process)
                    raise optuna.TrialPruned(f"epoch {record['epoch']}: val acc {record['val_acc']:.4f}")
            if ended:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        stop(process)
        requeue(trial)
        raise
    finally:
        stop(process)
    if process.returncode == INTERRUPTED:
        requeue(trial)
        raise KeyboardInterrupt(f"erav1 train was interrupted; trial {trial.number} is queued again")
    if process.returncode != 0:
        raise TrainingFailed(f"erav1 train exited with status {process.returncode}; see {run_dir / 'train.log'}")
    if len(history) == earlier:  # the run had finished before its worker died: environment.json is its trainer's
        trial.set_user_attr("ran_on", ran_on(run_dir))
    return history


def ran_on(run_dir: Path) -> str:
    """Where the run's trainer trains, for the book's table: workers on several machines share one study."""
    environment = rundir.read_json(run_dir / rundir.ENVIRONMENT)
    return f"{rundir.describe_hardware(environment)}, {environment['precision']}"


def read_history(run_dir: Path) -> list[dict]:
    """The epochs written so far (history.json is replaced atomically, so never half-written)."""
    try:
        return json.loads((run_dir / rundir.HISTORY).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []


def stop(process: subprocess.Popen, timeout_s: float = 300) -> None:
    """Interrupt a running trainer as Ctrl-C would: it stops at once, and last.pt keeps its last finished epoch."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def requeue(trial: optuna.Trial) -> None:
    """Queue the interrupted trial's parameters again: the next worker resumes its run directory."""
    trial.study.enqueue_trial(trial.params, user_attrs={"resumes": trial.number})


def best_recipe(study: optuna.Study) -> dict[str, Any]:
    """The parameters of the complete trial with the highest validation accuracy, as its run was named."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise Erav1Error(
            f"the study {study.study_name!r} has no complete trial yet, so no recipe to confirm; "
            "run scripts/search_recipe.py first"
        )
    return {name: tidy(value) for name, value in study.best_trial.params.items()}


def train_seeds(
    params: Mapping[str, Any], settings: StudySettings, seeds: list[int], jobs: int = 1, kept: Path | None = None
) -> list[Path]:
    """Train a recipe on all of train and score it on test, once per seed, ``jobs`` at a time; the run directories.

    Each seed's run goes to ``settings.runs / seedN`` and resumes what an interrupted lease left there. The
    test set scores these runs and chooses nothing: the recipe was chosen on validation before they start.

    A run directory is not committed, and it is lost with its machine; on a CPU a seed trains for hours, so
    the confirmation may span machines. With ``kept`` (a committed folder), each seed is copied there as
    soon as it ends (:func:`keep_run`; the first seed, the one to publish, with its weights), and a seed
    found there is restored rather than trained again.
    """
    run_dirs = [settings.runs / f"seed{seed}" for seed in seeds]
    common = {"data": settings.data, "epochs": settings.epochs}
    options = {run_dir: {**common, "seed": seed, **params} for run_dir, seed in zip(run_dirs, seeds, strict=True)}
    for run_dir in run_dirs:
        restored = kept is not None and restore_run(kept, run_dir, options[run_dir], settings.data_dir)
        if restored:
            print(f"{run_dir}: restored from {kept}, where it was kept when it ended", flush=True)
        if run_finished(run_dir):
            check_same_run(run_dir, options[run_dir])
            if kept is not None and not restored:  # it ended here before seeds were kept as they end
                keep_run(run_dir, kept, weights=run_dir == run_dirs[0])
    queue = [run_dir for run_dir in run_dirs if not run_finished(run_dir)]
    running: list[tuple[Path, subprocess.Popen]] = []
    failed = []
    try:
        while queue or running:
            while queue and len(running) < jobs:
                run_dir = queue.pop(0)
                run_dir.mkdir(parents=True, exist_ok=True)
                with open(run_dir / "train.log", "ab") as log:
                    process = subprocess.Popen(
                        train_command(run_dir, options[run_dir], settings), stdout=log, stderr=subprocess.STDOUT
                    )
                running.append((run_dir, process))
            time.sleep(settings.poll_s)
            for run_dir, process in [item for item in running if item[1].poll() is not None]:
                running.remove((run_dir, process))
                if process.returncode != 0:
                    failed.append(f"{run_dir} (exit {process.returncode}; see its train.log)")
                elif kept is not None:
                    keep_run(run_dir, kept, weights=run_dir == run_dirs[0])
                    print(
                        f"{run_dir}: finished, kept in {kept} (commit it: a run directory dies with its machine)",
                        flush=True,
                    )
    finally:
        for _, process in running:  # Ctrl-C: every trainer keeps its last finished epoch in last.pt
            stop(process)
    if failed:
        raise TrainingFailed("erav1 train failed for " + ", ".join(failed))
    return run_dirs


def run_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that trained all its epochs."""
    if not (run_dir / rundir.CONFIG).is_file() or not (run_dir / rundir.HISTORY).is_file():
        return False
    done, planned = rundir.epochs_done(run_dir)
    return done == planned


def keep_run(run_dir: Path, kept: Path, weights: bool = False) -> None:
    """Copy a finished run's record into ``kept`` as ``seedN.config.json`` etc., with ``weights`` its fp16 weights.

    The record is all that publishing needs of a seed that confirms the recipe; the published seed's weights
    become the published file (the same fp16 bytes), so they wait here for it, once, and no other seed's do.
    The kept config names the default cache: where this machine kept its decoded images is no part of the
    run, and a committed file holds no path of the machine that wrote it.
    """
    from erav1.main import Config

    kept.mkdir(parents=True, exist_ok=True)
    config = rundir.read_json(run_dir / rundir.CONFIG) | {"data_dir": Config.data_dir}
    atomic_write_json(config, kept / f"{run_dir.name}.{rundir.CONFIG}")
    for name in (rundir.ENVIRONMENT, rundir.HISTORY):
        atomic_copy(run_dir / name, kept / f"{run_dir.name}.{name}")
    if weights and (run_dir / rundir.WEIGHTS).is_file():  # a seed restored after it was published has none
        save_fp16_weights(load_checkpoint(run_dir / rundir.WEIGHTS), kept / f"{run_dir.name}.{rundir.WEIGHTS}")


def restore_run(kept: Path, run_dir: Path, options: Mapping[str, Any], data_dir: str) -> bool:
    """Copy a seed kept by :func:`keep_run` into ``run_dir``, if it trained ``options``; whether it did.

    Only where ``run_dir`` holds nothing to resume (no ``last.pt``): a new machine, or a run that had not
    finished an epoch. The config, given this machine's cache ``data_dir`` to publish from, goes last, so that
    a copy cut short is made again next time. A kept seed of another recipe (the study found a better one
    since) stays where it is, replaced when this recipe's ends.
    """
    config = kept / f"{run_dir.name}.{rundir.CONFIG}"
    if run_finished(run_dir) or (run_dir / rundir.CHECKPOINT).exists() or not config.is_file():
        return False
    saved = rundir.read_json(config)
    if changed_options(saved, options):
        return False
    for name in (rundir.WEIGHTS, rundir.ENVIRONMENT, rundir.HISTORY):
        if (kept / f"{run_dir.name}.{name}").is_file():
            atomic_copy(kept / f"{run_dir.name}.{name}", run_dir / name)
    atomic_write_json(saved | {"data_dir": data_dir}, run_dir / rundir.CONFIG)
    return True

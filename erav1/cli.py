"""The ``erav1`` command line: ``erav1 train``, and more subcommands as they are registered.

Every training option is generated from :class:`erav1.main.Config`, so the help
text, the defaults and the valid choices have one source.  Errors a user can
fix print one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from pathlib import Path

from erav1.book.runner import add_book_parser
from erav1.errors import Erav1Error, UsageError

if typing.TYPE_CHECKING:
    from erav1.main import Config

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """Reports a bad option in one line plus a pointer to --help, not a usage dump."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\nRun '{self.prog} --help' to see every option.\n")


def _field_type(annotation: object) -> type:
    """The concrete type behind an annotation such as ``int | None``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation  # type: ignore[return-value]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    from erav1.main import Config

    group = parser.add_argument_group("training options (the Config fields)")
    hints = typing.get_type_hints(Config)
    for f in fields(Config):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(hints[f.name])
        default = f.default if f.default is not MISSING else None
        help_text = meta["help"]  # the train parser's ArgumentDefaultsHelpFormatter adds the default
        if kind is bool:
            group.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            if kind is int and f.name in ("epochs", "batch_size", "eval_batch_size", "subset"):
                kind = _positive_int
            group.add_argument(
                flag,
                dest=f.name,
                type=kind,
                default=default,
                choices=meta.get("choices"),
                help=help_text,
                metavar=None if meta.get("choices") else f.name.upper(),
            )


def options_table() -> str:
    """The training options as a Markdown table, for the README (a test keeps the two in sync)."""
    from erav1.main import Config

    rows = ["| option | default | meaning |", "|---|---|---|"]
    for f in fields(Config):
        if f.metadata.get("cli", True):
            choices = f.metadata.get("choices")
            meaning = f.metadata["help"] + (f" ({', '.join(choices)})" if choices else "")
            flag = "--" + f.name.replace("_", "-")
            rows.append(f"| `{flag}` | `{f.default}` | {meaning} |")
    return "\n".join(rows)


def _resume_config(args: argparse.Namespace) -> Config:
    """The run's own config.json, plus only those options that cannot change its result (e.g. --device)."""
    from erav1.main import RESUMABLE_CHANGES, Config
    from erav1.utils.rundir import CONFIG, read_json

    run_dir = Path(args.resume)
    if not (run_dir / CONFIG).exists():
        raise Erav1Error(
            f"nothing to resume: {run_dir} has no {CONFIG}. Start a run with 'erav1 train --run-dir {run_dir}'."
        )
    given = {
        f.name: getattr(args, f.name)
        for f in fields(Config)
        if hasattr(args, f.name) and getattr(args, f.name) != f.default
    }
    refused = sorted(set(given) - RESUMABLE_CHANGES)
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise Erav1Error(
            f"--resume continues {run_dir} with its own config.json, so {flags} cannot change; "
            f"drop {'them' if len(refused) > 1 else 'it'}, or start a new run in another --run-dir"
        )
    values = read_json(run_dir / CONFIG)
    values.update(given, run_dir=str(run_dir), resume=True, overwrite=False)
    return Config.from_dict(values)


# torchrun ends every process as soon as one exits, so a rank that exits first can cut rank 0 off before it reports
# the error they share; the others wait this long for rank 0 to report and end them, then report it themselves.
RANK_ZERO_REPORT_WAIT_S = 30.0


def _rank_zero() -> bool:
    """Under torchrun every process ends the same way; rank 0 alone reports it."""
    return os.environ.get("RANK", "0") == "0"


def _report(exc: Erav1Error) -> int:
    """Print ``exc`` once per run: from rank 0, or from another rank whose error rank 0 did not share."""
    if not _rank_zero():
        try:
            time.sleep(RANK_ZERO_REPORT_WAIT_S)
        except KeyboardInterrupt:  # torchrun ended this process after rank 0 exited, having reported
            return 130
    print(f"erav1: error: {exc}", file=sys.stderr)
    return 2


def run_train(args: argparse.Namespace) -> int:
    from erav1.main import Config, fit

    if args.resume:
        config = _resume_config(args)
    else:
        config = Config.from_dict({f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)})
    result = fit(config, progress=not args.no_progress)
    final = result.final
    if _rank_zero():
        print(
            f"done: final test accuracy {100 * final['test_acc']:.2f}% after {final['epoch']} epochs; "
            f"files in {result.run_dir}"
        )
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from erav1.analysis import METRICS, analyze_run, default_report_dir
    from erav1.utils.cam_trust import RANDOM

    out = Path(args.out) if args.out else default_report_dir(args.model)
    metrics = analyze_run(
        args.model,
        n=args.n,
        layer=args.layer,
        order=args.order,
        data=args.data,
        data_dir=args.data_dir,
        device=args.device,
        precision=args.precision,
        allow_coarse=args.allow_coarse,
        out=out,
        **{
            name: getattr(args, name)
            for name in ("faithfulness_n", "faithfulness_seed")
            if getattr(args, name) is not None
        },  # unset: analyze_run's defaults, which are chapter 7's
    )
    h, w = metrics["gradcam"]["map_size"]
    road = metrics["faithfulness"]
    best = next((row for row in road["table"] if row["method"] != RANDOM), None) if road else None
    print(
        f"test accuracy {100 * metrics['accuracy']:.2f}% on {metrics['num_images']} images; "
        f"{len(metrics['misclassified']['items'])} misclassified shown, Grad-CAM at {metrics['gradcam']['layer']} "
        f"({h}x{w}); "
        + (f"ROAD on {road['num_images']} images ranks {best['label']} first; " if best else "")
        + f"{len(metrics['figures'])} figures and {METRICS} in {out}"
    )
    return 0


def add_analyze_parser(commands: argparse._SubParsersAction) -> None:
    from erav1.utils.misclassified import ORDERS
    from erav1.utils.policies import DEVICES, PRECISIONS

    analyze = commands.add_parser(
        "analyze",
        help="evaluate a run, a weights file or the published run, and write its report",
        description="Score a trained model on its test split; write every figure and metrics.json into a report "
        "folder (RUN_DIR/report/ for a run directory).",
    )
    analyze.add_argument(
        "model",
        metavar="MODEL",
        help="a run directory written by 'erav1 train', a weights file (.pt), or 'published' for "
        "the book's published run (downloaded once when not in a clone)",
    )
    analyze.add_argument("--out", help="report folder (default: RUN_DIR/report, or reports/NAME for a weights file)")
    analyze.add_argument(
        "--n", type=_positive_int, default=10, help="how many misclassified images to show (default: %(default)s)"
    )
    analyze.add_argument(
        "--order",
        choices=ORDERS,
        default="confidence",
        help="confidence: the most confident mistakes first; index: in test-set order (default: %(default)s)",
    )
    analyze.add_argument(
        "--layer",
        default="auto",
        help="Grad-CAM layer, e.g. layer3.1; auto: the deepest residual block with a map of at "
        "least 5x5 (default: %(default)s)",
    )
    analyze.add_argument("--allow-coarse", action="store_true", help="accept a --layer whose map is under 5x5")
    analyze.add_argument(
        "--faithfulness-n",
        type=_non_negative_int,
        metavar="N",
        help="test images (half right, half wrong) for ROAD's faithfulness table of every CAM "
        "method; 0 skips it (default: chapter 7's sample size)",
    )
    analyze.add_argument(
        "--faithfulness-seed",
        type=int,
        metavar="SEED",
        help="seed of that sample, of the random-map baseline and of ROAD's noise (default: chapter 7's)",
    )
    analyze.add_argument("--data", help="dataset to score (default: the run's, from its config.json)")
    analyze.add_argument("--data-dir", help="dataset cache folder (default: the run's, from its config.json)")
    analyze.add_argument(
        "--device", choices=DEVICES, default="auto", help="auto picks cuda, then mps, then cpu (default: %(default)s)"
    )
    analyze.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="precision of the evaluation pass (default: %(default)s)",
    )
    analyze.set_defaults(handler=run_analyze)


def run_publish(args: argparse.Namespace) -> int:
    from erav1.book.refresh import refresh_if_published
    from erav1.publish import SUMMARY, add_seed_runs, publish_run

    if args.run_dir is None:
        if not args.seed_run:
            raise UsageError(
                "give RUN_DIR to publish a run, or --seed-run DIR to add another seed of the "
                "published recipe to its summary.json"
            )
        summary = add_seed_runs(args.out, tuple(args.seed_run))
        print(f"added {len(args.seed_run)} seed(s) to the published run in {Path(args.out) / SUMMARY}")
    else:
        summary = publish_run(args.run_dir, args.out, args.device, tuple(args.seed_run))
        print(
            f"published {args.run_dir}: final test accuracy {100 * summary['test_accuracy']:.2f}% "
            f"after {summary['epochs']} epochs -> {Path(args.out) / SUMMARY}"
        )
    if len(summary["seeds"]) > 1:
        seeds = ", ".join(f"seed {r['seed']} {100 * r['test_accuracy']:.2f}%" for r in summary["seeds"])
        spread = 100 * summary["seed_spread"]
        print(f"the recipe with {len(summary['seeds'])} seeds: {seeds}; spread {spread:.2f} points")
    refresh_if_published(args.out)  # the clone's own results: its pages and chapters show them
    return 0


def add_publish_parser(commands: argparse._SubParsersAction) -> None:
    from erav1.published import RESULTS_DIR
    from erav1.utils.policies import DEVICES

    publish = commands.add_parser(
        "publish",
        help="write a finished run's summary.json and fp16 weights for the book",
        description="Evaluate a finished run, then write summary.json and resnet18_cifar10.pt (fp16 weights). "
        "Without RUN_DIR, add other seeds of the published recipe to the summary.json in --out.",
    )
    publish.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        nargs="?",
        help="a finished run directory (omit it to add --seed-run runs to the published summary)",
    )
    publish.add_argument("--out", default=RESULTS_DIR, help="where to write them (default: %(default)s)")
    publish.add_argument(
        "--device", choices=DEVICES, default="auto", help="device of the evaluation pass (default: %(default)s)"
    )
    publish.add_argument(
        "--seed-run",
        action="append",
        default=[],
        metavar="DIR",
        help="a finished run of the same recipe with another seed, which confirms it; repeat it "
        "for each seed (summary.json lists every seed's final test accuracy)",
    )
    publish.set_defaults(handler=run_publish)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="erav1", description="ResNet on CIFAR-10: train, analyse, build the book.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a ResNet on CIFAR-10 and write a run directory.",
    )
    add_config_arguments(train)
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved config (--device may change)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar, only one line per epoch")
    train.set_defaults(handler=run_train)
    add_analyze_parser(commands)
    add_book_parser(commands)
    add_publish_parser(commands)
    for sub in commands.choices.values():
        sub.set_defaults(parser=sub)
    return parser


def install_interrupt_handlers() -> None:
    """Ctrl-C and SIGTERM (a job scheduler stopping the run) both stop training cleanly.

    The scripts that drive ``erav1 train`` (the recipe study, the seeds) install them too: stopped by
    ``kill``, they stop their trainers the same way and keep what can resume.

    SIGINT gets Python's own handler even when the parent started us with it ignored
    (as non-interactive shells do for background jobs), so ``kill -INT`` still works.
    """

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # report it from the subcommand, whose --help lists its options
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    install_interrupt_handlers()
    try:
        return args.handler(args)
    except Erav1Error as exc:
        return _report(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

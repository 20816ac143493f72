"""Command line: ``python -m core <command>`` (installed as ``ree``).

Each command adds one subparser (``_add_<command>``) whose handler does the work. Command modules
are imported inside these functions, not at the top of this file, so importing it costs nothing.
"""
from __future__ import annotations

import argparse
import json
import sys


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _add_bench(commands) -> None:
    from .bench import DEFAULTS, ENTRIES

    p = commands.add_parser(
        "bench", help="time training iterations and rollouts of every model family",
        description="Time a training iteration (6-step rollout + penalty + Adam step) and a "
                    "20-step batch-1 eval rollout for each model family at equal width, with "
                    "ratios against the strict model of each family and against the plain CNN.")
    d = DEFAULTS
    p.add_argument("--grid", nargs=2, type=_positive, metavar=("H", "W"), default=list(d["grid"]),
                   help="grid size (default: %s %s)" % tuple(d["grid"]))
    p.add_argument("--batch", metavar="N", type=_positive, default=d["batch"],
                   help="training batch size (default: %(default)s)")
    p.add_argument("--hidden", metavar="N", dest="hidden_dim", type=_positive,
                   default=d["hidden_dim"],
                   help="channels per pixel, equal for every family (default: %(default)s)")
    p.add_argument("--layers", metavar="N", dest="num_layers", type=_positive,
                   default=d["num_layers"],
                   help="number of layers (default: %(default)s)")
    p.add_argument("--frames", metavar="N", dest="in_frames", type=_positive,
                   default=d["in_frames"],
                   help="input frames (default: %(default)s)")
    p.add_argument("--kernel", metavar="N", dest="kernel_size", type=_positive,
                   default=d["kernel_size"],
                   help="odd kernel size (default: %(default)s)")
    p.add_argument("--banks", metavar="N", dest="num_banks", type=_positive,
                   default=d["num_banks"],
                   help="filter banks L of the relaxed group convs (default: %(default)s)")
    p.add_argument("--models", metavar="A,B,...", default=",".join(d["models"]),
                   help="comma-separated entries to measure, from: " + ", ".join(ENTRIES)
                        + " (default: all)")
    p.add_argument("--repeats", metavar="N", type=_positive, default=d["repeats"],
                   help="interleaved timing rounds; the median is reported (default: %(default)s)")
    p.add_argument("--warmup", metavar="N", type=_non_negative, default=d["warmup"],
                   help="untimed repeats first (default: %(default)s)")
    p.add_argument("--sample-seconds", metavar="S", dest="sample_seconds", type=float,
                   default=d["sample_seconds"],
                   help="each timed sample repeats a task to last about this long "
                        "(default: %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default=d["device"],
                   help="auto picks CUDA, then MPS, then CPU (default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=d["dtype"],
                   help="(default: %(default)s)")
    p.add_argument("--threads", metavar="N", type=_positive, default=d["threads"],
                   help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (machine, settings, results, targets) instead of "
                        "the table")
    p.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from .bench import DEFAULTS, format_report, run_benchmark

    settings = {key: getattr(args, key) for key in DEFAULTS}
    try:
        report = run_benchmark(**settings)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    # Run as ``python -m core`` argv[0] is this file's path; name the command as typed instead.
    prog = "python -m core" if sys.argv[0].endswith("__main__.py") else None
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Relaxed-Equivariance Explorer: command line tools.")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    _add_bench(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

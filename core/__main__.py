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
    p.add_argument("--suite", choices=("all", "models", "simulation"), default=d["suite"],
                   help="what to time: the model zoo, the simulator, or both (default: %(default)s)")
    p.add_argument("--sim-batches", metavar="N", dest="sim_batches", type=_positive, nargs="+",
                   default=list(d["sim_batches"]),
                   help="simulator batch sizes (default: %(default)s)")
    p.add_argument("--sim-steps", metavar="N", dest="sim_steps", type=_positive,
                   default=d["sim_steps"], help="simulator steps per timing (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (machine, settings, results, targets, simulation) "
                        "instead of the table")
    p.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from .bench import DEFAULTS, format_report, run_benchmark

    settings = {key: getattr(args, key) for key in DEFAULTS}
    try:
        report = run_benchmark(**settings)
    except ValueError as err:
        return _fail(str(err))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _fail(message: str) -> int:
    """Bad input: one line on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def _add_generate(commands) -> None:
    from .scenarios import DEFAULT_SIMS

    p = commands.add_parser(
        "generate", help="simulate a scenario and save it as netCDF",
        description="Simulate a smoke-plume scenario with a symmetry-breaking dial and save it "
                    "(netCDF, atomically). The custom scenario is available from Python "
                    "(core.datasets.generate('custom', inflows=...)).")
    p.add_argument("scenario", choices=sorted(DEFAULT_SIMS), help="which set-up")
    p.add_argument("--out", required=True, metavar="PATH", help="netCDF file to write")
    p.add_argument("--grid", type=_positive, default=64, metavar="N", help="N x N cells (default 64)")
    p.add_argument("--steps", type=_positive, default=310, metavar="T", help="time steps (default 310)")
    p.add_argument("--sims", type=_positive, default=None, metavar="K",
                   help="number of simulations (default: the scenario's, e.g. rotation 36)")
    p.add_argument("--breaking", type=float, default=1.0, metavar="X",
                   help="0 = exactly symmetric set-up, 1 = the paper's, more = stronger (default 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="recorded seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.set_defaults(handler=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .datasets import DatasetError, generate, save_dataset, summary

    bar = None

    def progress(done, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="step", desc=f"simulating {args.scenario}",
                       file=sys.stderr)
        bar.update(done - bar.n)

    start = time.perf_counter()
    try:
        ds = generate(args.scenario, grid=args.grid, steps=args.steps, sims=args.sims,
                      breaking=args.breaking, seed=args.seed, device=args.device,
                      progress=progress)
    except (ValueError, DatasetError) as err:
        return _fail(str(err))
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    path = save_dataset(ds, args.out)
    info = summary(ds)
    sims, steps = info["dims"]["sim"], info["dims"]["time"]
    print(f"wrote {path}: {sims} sims x {steps} steps on {args.grid}x{args.grid} in "
          f"{elapsed:.1f} s ({sims * steps / elapsed:.0f} sim-steps/s)")
    _print_info(info)
    return 0


def _print_info(info: dict) -> None:
    dims = ", ".join(f"{k}={v}" for k, v in info["dims"].items())
    split = info["split"]
    print(f"scenario {info['scenario']} (breaking {info['breaking']:g}, seed {info['seed']}); {dims}")
    print(f"split: {len(split['train_sims'])} train sims, {len(split['domain_sims'])} domain sims "
          f"{split['domain_sims']}; start windows train {split['window_train']} valid "
          f"{split['window_valid']} future {split['window_future']} domain "
          f"{split['window_domain']}")
    print(f"max speed {info['max_speed']:.3f}; max |divergence| {info['max_divergence']:.2e} "
          f"(solver tolerance {info['divergence_tolerance']:.0e} x max speed)")
    dee = info["data_equivariance_error"]
    if dee is None:
        print("data equivariance error: n/a (no orbit structure)")
    else:
        per = " ".join(f"{e:.3f}" for e in dee["per_orbit"])
        print(f"data equivariance error ({dee['group']}): mean {dee['mean']:.3f}; per orbit {per}")


def _add_import_pt(commands) -> None:
    p = commands.add_parser(
        "import-pt", help="convert a folder of published .pt tensors to our netCDF format",
        description="Read one [T, 2, H, W] tensor per simulation (torch.load with "
                    "weights_only=True) and save them in the dataset format.")
    p.add_argument("folder", help="folder of .pt files")
    p.add_argument("--layout", required=True, choices=("phiflow", "jetflow"))
    p.add_argument("--out", required=True, metavar="PATH", help="netCDF file to write")
    p.set_defaults(handler=_run_import_pt)


def _run_import_pt(args: argparse.Namespace) -> int:
    from .datasets import DatasetError, import_pt, save_dataset, summary

    try:
        ds = import_pt(args.folder, args.layout)
    except DatasetError as err:
        return _fail(str(err))
    path = save_dataset(ds, args.out)
    print(f"wrote {path}")
    _print_info(summary(ds))
    return 0


def _add_info(commands) -> None:
    p = commands.add_parser("info", help="describe a dataset file",
                            description="Dims, scenario, breaking, split, max |divergence| and "
                                        "data equivariance error of a dataset.")
    p.add_argument("path", help="netCDF dataset")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from .datasets import DatasetError, load_dataset, summary

    try:
        info = summary(load_dataset(args.path))
    except DatasetError as err:
        return _fail(str(err))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


def build_parser() -> argparse.ArgumentParser:
    # Run as ``python -m core`` argv[0] is this file's path; name the command as typed instead.
    prog = "python -m core" if sys.argv[0].endswith("__main__.py") else None
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Relaxed-Equivariance Explorer: command line tools.")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    _add_bench(commands)
    _add_generate(commands)
    _add_import_pt(commands)
    _add_info(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

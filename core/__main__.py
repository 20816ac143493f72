"""Command line: ``python -m core <command>`` (installed as ``ree``).

Each command adds one subparser (``_add_<command>``) whose handler does the work. Command modules
are imported inside these functions, not at the top of this file, so importing it costs nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


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
    p.add_argument("--suite", choices=("all", "models", "simulation", "paper", "discovery"),
                   default=d["suite"],
                   help="what to time: the model zoo, the simulator, both (all), the "
                        "published configurations with epoch times (paper; fp32 and, on CUDA, "
                        "bf16), or whole discover calls with their peak memory (discovery, "
                        "minutes) (default: %(default)s)")
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


def _add_import(commands) -> None:
    from .datasets import PT_LAYOUTS

    p = commands.add_parser(
        "import", aliases=["import-pt"],
        help="read your own flow (netCDF/HDF5, .npy/.npz, .pt folder or zip) into a dataset",
        description="Read velocity data into the dataset format (core/importers.py): our "
                    "netCDF; netCDF/HDF5 with other variable and dimension names (recognised, "
                    "or given with --map); .npy/.npz arrays [sims, T, 2, H, W] or [T, 2, H, W]; "
                    "a folder or .zip of .pt tensors [T, 2, H, W] (never unpickled). Default "
                    "splits: future = the last start times, domain = held-out sims from 3 sims "
                    "on. An existing --out is kept unless --force.")
    p.add_argument("path", help="file or folder to read")
    p.add_argument("--out", required=True, metavar="PATH", help="netCDF file to write")
    p.add_argument("--map", dest="mapping", metavar="ROLE=NAME,...",
                   help="names in the file: u, v, velocity, component, sim, time, y, x "
                        "(e.g. u=U,v=V,x=lon,y=lat)")
    p.add_argument("--layout", choices=sorted(PT_LAYOUTS),
                   help="published .pt data: record the scenario as imported-LAYOUT")
    p.add_argument("--crop-square", action="store_true",
                   help="keep the centred square of a non-square grid (for rotation symmetry "
                        "of the data: discovery with C_n/D_n)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(handler=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from .datasets import DatasetError, save_dataset, summary
    from .importers import crop_square, parse_mapping, read_flow

    out = Path(args.out)
    if out.exists() and not args.force:
        return _fail(f"{out} exists; pass --force to replace it (nothing was written)")
    try:
        ds = read_flow(args.path, parse_mapping(args.mapping))
    except DatasetError as err:
        return _fail(str(err))
    if args.crop_square:
        ds = crop_square(ds)
    if args.layout:
        from .datasets import PT_LAYOUTS
        ds.attrs["scenario"] = PT_LAYOUTS[args.layout]["scenario"]
    path = save_dataset(ds, out)
    print(f"wrote {path} ({ds.attrs['split_note']})" if "split_note" in ds.attrs
          else f"wrote {path}")
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


def _add_model_and_training(p, *, sweep: bool = False) -> None:
    """Arguments shared by `train` and `sweep`."""
    p.add_argument("--data", required=True, metavar="PATH", help="dataset (netCDF)")
    p.add_argument("--model", required=True, metavar="NAME", help="model name, e.g. rgroup")
    p.add_argument("--group", default=None, metavar="G",
                   help="symmetry group, e.g. C4, D4, SO2, translation, scale "
                        "(scale:1,1.5,2 for other scale factors)")
    if not sweep:
        p.add_argument("--num-banks", type=_positive, default=1, metavar="L")
        p.add_argument("--alpha", type=float, default=0.0, metavar="A")
        p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--hidden", type=_positive, default=32, metavar="H", help="channels per pixel")
    p.add_argument("--layers", type=_positive, default=5, metavar="K")
    p.add_argument("--kernel", type=_positive, default=3, metavar="N")
    p.add_argument("--frames", type=_positive, default=10, metavar="N", help="input frames")
    p.add_argument("--epochs", type=_positive, default=20, metavar="E")
    p.add_argument("--batch-size", type=_positive, default=8, metavar="B")
    p.add_argument("--lr", type=float, default=1e-3, metavar="LR")
    p.add_argument("--batches-per-epoch", type=_positive, default=None, metavar="N",
                   help="cap batches per epoch (random subset) for quick runs")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--runs", default="runs", metavar="DIR", help="run store (default ./runs)")


def _specs(args, alpha: float, banks: int, seed: int) -> tuple[dict, dict]:
    model = dict(name=args.model, group=args.group, in_frames=args.frames, hidden_dim=args.hidden,
                 num_layers=args.layers, kernel_size=args.kernel, num_banks=banks, alpha=alpha)
    training = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                    device=args.device, batches_per_epoch=args.batches_per_epoch)
    return model, training


def _add_train(commands) -> None:
    p = commands.add_parser("train", help="train one model in the foreground (a run is saved)",
                            description="Train a model on a dataset; the run (spec, weights, "
                                        "metrics, status) is saved in the run store, whose "
                                        "directory is printed last.")
    _add_model_and_training(p)
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .datasets import DatasetError, load_dataset
    from .errors import SpecError
    from .jobs import execute_run
    from .models import build_model
    from .runs import RunStore
    from .training import TrainConfig

    model_spec, training = _specs(args, args.alpha, args.num_banks, args.seed)
    try:
        TrainConfig.from_dict(training)
        ds = load_dataset(args.data)
        model_spec["grid"] = list(ds["velocity"].shape[-2:])
        build_model(**model_spec)
        run = RunStore(args.runs).create(model_spec, training, str(Path(args.data).resolve()))
    except (SpecError, DatasetError, ValueError) as err:
        return _fail(str(err))
    bar = tqdm(total=args.epochs, unit="epoch", desc=f"{args.model} {args.group or ''}".strip(),
               file=sys.stderr)

    def progress(info):
        if info["kind"] == "batch":
            bar.set_postfix_str(f"batch {info['batch']}/{info['batches']} loss {info['loss']:.4g}")
        else:
            bar.update(1)
            bar.set_postfix_str(f"valid RMSE {info['valid_rmse']:.4g}")

    state = execute_run(run.path, progress=progress, ds=ds)
    bar.close()
    status = run.status()
    if state != "done":
        print(f"run {state}: {status.get('error') or status.get('message')}", file=sys.stderr)
    print(run.path)
    return 0 if state == "done" else 1


def _open_run(text: str, runs: str):
    from .runs import Run, RunStore

    path = Path(text)
    if path.is_dir() and (path / "spec.json").exists():
        return Run.open(path)
    return RunStore(runs).get(text)


def _add_evaluate(commands) -> None:
    p = commands.add_parser("evaluate", help="rollout errors, equivariance and breaking of a run",
                            description="Evaluate a run's best weights: future/domain RMSE per "
                                        "rollout step and mean, model equivariance error, "
                                        "breaking scores.")
    p.add_argument("run", help="run directory or run id")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="dataset (default: the run's own)")
    p.add_argument("--runs", default="runs", metavar="DIR", help="run store for run ids")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_run_evaluate)


def evaluation_report(run, ds) -> dict:
    """The documented keys of `evaluate --json`."""
    from .analysis import breaking_analysis
    from .jobs import evaluate_model

    model = run.load_model()
    final = evaluate_model(model, ds, max_samples=None)
    breaking = breaking_analysis(model)

    def num(name):
        return float(final[name]) if name in final else None

    def per(name, dim):
        return ({str(k): float(v) for k, v in zip(final[name][dim].values, final[name].values)}
                if name in final else None)

    return dict(run=run.id, model=model.spec, dataset=str(ds.attrs.get("scenario")),
                future_rmse=num("future_rmse"), domain_rmse=num("domain_rmse"),
                future_rmse_step=per("future_rmse_step", "rollout_step"),
                domain_rmse_step=per("domain_rmse_step", "rollout_step"),
                equivariance_error=num("equivariance_error"),
                equivariance_error_element=per("equivariance_error_element", "element"),
                breaking_score=num("breaking_score"), breaking_kind=breaking.attrs.get("kind"))


def _run_evaluate(args: argparse.Namespace) -> int:
    from .datasets import DatasetError, load_dataset
    from .runs import RunError

    try:
        run = _open_run(args.run, args.runs)
        ds = load_dataset(args.data or run.dataset_path())
        report = evaluation_report(run, ds)
    except (RunError, DatasetError) as err:
        return _fail(str(err))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"run {report['run']}: {report['model']['name']} {report['model']['group']} on "
          f"{report['dataset']}")
    for key in ("future_rmse", "domain_rmse", "equivariance_error", "breaking_score"):
        value = report[key]
        print(f"  {key:<20} {'-' if value is None else format(value, '.4f')}")
    return 0


def _add_runs(commands) -> None:
    p = commands.add_parser("runs", help="list the runs of a run store")
    p.add_argument("--runs", default="runs", metavar="DIR", help="run store (default ./runs)")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(handler=_run_runs)


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if v is None:
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


RUN_COLUMNS = ["id", "model", "group", "num_banks", "alpha", "dataset", "state", "future_rmse",
               "domain_rmse", "equivariance_error"]


def _run_runs(args: argparse.Namespace) -> int:
    from .runs import RunStore

    rows = RunStore(args.runs).list()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        print(f"no runs in {args.runs}")
    else:
        print(_table(rows, RUN_COLUMNS))
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def _ints(text: str) -> list[int]:
    values = _floats(text)
    if any(v != int(v) or v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return [int(v) for v in values]


def _add_sweep(commands) -> None:
    p = commands.add_parser("sweep", help="train a grid of alphas x banks x seeds on Dask",
                            description="Submit one job per (alpha, num_banks, seed) to a Dask "
                                        "cluster (a LocalCluster on 127.0.0.1 when no address) "
                                        "and print the results table.")
    _add_model_and_training(p, sweep=True)
    p.add_argument("--alpha", type=_floats, default=[0.0], metavar="A,B,...")
    p.add_argument("--num-banks", type=_ints, default=[1], metavar="L,M,...")
    p.add_argument("--seeds", type=_positive, default=1, metavar="N", help="seeds 0..N-1")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (default: a LocalCluster on 127.0.0.1)")
    p.set_defaults(handler=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    from .datasets import DatasetError, load_dataset
    from .errors import SpecError
    from .jobs import JobManager
    from .models import build_model
    from .training import TrainConfig

    try:
        ds = load_dataset(args.data)
        grid = list(ds["velocity"].shape[-2:])
        points = []
        for alpha in args.alpha:
            for banks in args.num_banks:
                for seed in range(args.seeds):
                    model, training = _specs(args, alpha, banks, seed)
                    model["grid"] = grid
                    build_model(**model)
                    TrainConfig.from_dict(training)
                    points.append((model, training))
    except (SpecError, DatasetError, ValueError) as err:
        return _fail(str(err))
    manager = JobManager(args.runs, scheduler=args.scheduler or "local")
    try:
        ids = [manager.submit(m, t, str(Path(args.data).resolve())) for m, t in points]
        print(f"submitted {len(ids)} jobs to {args.scheduler or 'a LocalCluster on 127.0.0.1'}",
              file=sys.stderr)
        for run_id in ids:
            manager.wait(run_id)
        rows = [r for r in manager.jobs() if r["id"] in set(ids)]
        for r in rows:
            r["seed"] = manager.store.get(r["id"]).spec["training"]["seed"]
        print(_table(rows, ["id", "alpha", "num_banks", "seed", "state", "future_rmse",
                            "domain_rmse", "equivariance_error"]))
    finally:
        manager.shutdown()
    return 0 if all(r["state"] == "done" for r in rows) else 1


def _add_precompute(commands) -> None:
    from .evaluation import KINDS

    p = commands.add_parser(
        "precompute", help="compute the dashboard's analyses of every finished run once",
        description="Write each finished run's evaluation artifacts (core/evaluation.py: "
                    f"{', '.join(KINDS)}) into its folder, keyed by the weights' and the "
                    "dataset's fingerprints, so that no dashboard session computes them. Runs "
                    "whose dataset is not here are skipped and say so. Run it before a class.")
    p.add_argument("stores", nargs="*", default=["data/pretrained"], metavar="STORE",
                   help="run store folders (default: data/pretrained)")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated (default: all)")
    p.set_defaults(handler=_run_precompute)


def _run_precompute(args: argparse.Namespace) -> int:
    from .evaluation import KINDS, precompute
    from .runs import RunStore

    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        return _fail(f"unknown kind(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(KINDS)}")
    missing = [s for s in args.stores if not Path(s).is_dir()]
    if missing:
        return _fail(f"no run store at {', '.join(missing)}")
    started = time.perf_counter()
    rows = []
    for store in args.stores:
        rows += precompute(RunStore(store).runs(), kinds)
    computed = sum(r["state"] == "computed" for r in rows)
    skipped = sum(r["state"].startswith("skipped") for r in rows)
    print(f"{len(rows)} analyses: {computed} computed, {len(rows) - computed - skipped} already "
          f"there, {skipped} skipped ({time.perf_counter() - started:.1f} s)")
    return 0


def _add_pretrain(commands) -> None:
    p = commands.add_parser("pretrain", help="train the shipped pretrained runs",
                            description="Train the dashboard's default runs on the default "
                                        "datasets (see core/pretrained.py).")
    p.add_argument("--runs", default="data/pretrained", metavar="DIR")
    p.add_argument("--data-dir", default="data", metavar="DIR")
    p.add_argument("--force", action="store_true", help="retrain runs that already exist")
    p.set_defaults(handler=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:
    from .datasets import DatasetError
    from .pretrained import pretrain

    try:
        pretrain(args.runs, args.data_dir, force=args.force)
    except DatasetError as err:
        return _fail(f"{err} (run `make data` first)")
    return 0


def _add_reproduce(commands) -> None:
    p = commands.add_parser("reproduce", help="reproduce the paper's claims with our data",
                            description="Generate the scenarios, train every model family with "
                                        "several seeds through the job system, evaluate, run "
                                        "the levels (Figure 4) and discovery experiments, and "
                                        "write results.md / results.json / figures.")
    p.add_argument("--preset", choices=("tiny", "cpu", "gpu"), default="cpu")
    p.add_argument("--out", default="results", metavar="DIR")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (default: local worker processes)")
    p.add_argument("--docs", action="store_true",
                   help="also write docs/RESULTS.md from the results")
    p.set_defaults(handler=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import run

    results = run(args.preset, args.out, scheduler=args.scheduler)
    if args.docs:
        from .reproduce import report
        from .runs import PROJECT_ROOT

        (PROJECT_ROOT / "docs").mkdir(exist_ok=True)
        (PROJECT_ROOT / "docs" / "RESULTS.md").write_text(report(results))
    return 0


def _add_discover(commands) -> None:
    from .discovery import PROTOCOLS

    p = commands.add_parser(
        "discover", help="does DATA break a symmetry, where, and how surely (relaxed models "
                         "against a symmetric null)",
        description="Train relaxed models on DATA and on a symmetric null (the control, or one "
                    "built from DATA: symmetrized orbits for C_n/D_n, a re-simulated twin with "
                    "uniform buoyancy for translation) through the job system, and print the "
                    "verdict: broken or not, its significance, the boundary (translation) or the "
                    "direction the data treats differently (C_n/D_n). The record, with its "
                    "runs, goes to RUNS/discoveries/.")
    p.add_argument("data", help="dataset file (.nc)")
    p.add_argument("--group", required=True, help="translation, C<n> or D<n> (exact ones)")
    p.add_argument("--control", metavar="DATA", help="a symmetric control dataset (same grid "
                                                     "and time steps)")
    p.add_argument("--seeds", type=_positive, default=3, help="(default: %(default)s)")
    p.add_argument("--budget", type=float, default=1.0,
                   help="factor on every training stage's epochs (default: %(default)s)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="default",
                   help="model sizes and budgets (default: %(default)s; quick: seconds, "
                        "weaker)")
    p.add_argument("--runs", default="runs", help="run store root (default: %(default)s)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="train on this Dask scheduler ('local': a LocalCluster on 127.0.0.1)")
    p.add_argument("--device", help="device for the training runs (default: the protocol's, cpu)")
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    p.add_argument("--record", help=argparse.SUPPRESS)  # a record made by launch()
    p.set_defaults(handler=_run_discover)


def _run_discover(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .discovery import PROTOCOLS, Discovery, discover, verdict_json

    protocol = PROTOCOLS[args.protocol]
    if args.device:
        protocol = replace(protocol, device=args.device)
    last = [-1]

    def progress(fraction, message):
        pct = int(100 * fraction)
        if pct != last[0] and not args.json:
            last[0] = pct
            print(f"[discover] {pct:3d}% {message}", file=sys.stderr)

    try:
        evidence = discover(args.data, args.group, control=args.control, seeds=args.seeds,
                            protocol=protocol, budget=args.budget, runs=args.runs,
                            scheduler=args.scheduler, progress=progress,
                            record=Discovery(args.record) if args.record else None)
    except InterruptedError as err:
        print(str(err), file=sys.stderr)
        return 1
    except ValueError as err:  # DiscoveryError, DatasetError, SpecError: bad input
        return _fail(str(err))
    verdict = verdict_json(evidence)
    if args.json:
        print(json.dumps(verdict))
        return 0
    print(f"{verdict['group']}: {'BROKEN' if verdict['broken'] else 'no breaking found'} "
          f"(significance {verdict['significance']:.3g}: {verdict['significance_method']})")
    if "boundary" in verdict:
        b = verdict["boundary"]
        print(f"strongest boundary: {b['axis']} = {b['position']:g} cells from the lower-left")
    if "direction" in verdict:
        d = verdict["direction"]
        where = d["label"] or f"orbit member {d['member']}"
        angle = "" if d["angle_deg"] is None else f" ({d['angle_deg']:.0f} degrees)"
        print(f"member treated differently: {where}{angle}; invariant subgroup "
              f"{{{', '.join(verdict['invariant_subgroup'])}}}")
    print(f"null: {verdict['null']}; {len(verdict['runs'])} runs in {verdict['run_store']}; "
          f"{verdict['seconds']:.0f} s")
    return 0


def _add_execute(commands) -> None:
    p = commands.add_parser("execute", help="(internal) run one queued job of a run store")
    p.add_argument("run_dir")
    p.add_argument("--nice", type=int, default=0,
                   help="lower this worker's priority by this much first (os.nice)")
    p.set_defaults(handler=_run_execute)


def _run_execute(args: argparse.Namespace) -> int:
    from .jobs import execute_run

    if args.nice > 0:
        os.nice(args.nice)
    return 0 if execute_run(args.run_dir) == "done" else 1


def _add_gpu_check(commands) -> None:
    p = commands.add_parser(
        "gpu-check", help="check and time the GPU path (correctness, jobs, simulator, speed "
                          "against the published code, a slice of reproduce --preset gpu)",
        description="Six steps in order (core/gpucheck.py), each recorded in OUT/gpu-check.json "
                    "and OUT/gpu-check.md as it finishes. Exit code 1 when a step failed; a "
                    "skipped step (no CUDA, a missing package, no time left) is not a failure.")
    p.add_argument("--out", required=True, help="folder for gpu-check.json and gpu-check.md")
    p.add_argument("--device", default="cuda", help="cuda (default), cpu or auto")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes: the whole check in well under two minutes on a CPU")
    p.add_argument("--minutes", type=float, default=8.0,
                   help="time budget shared by the steps (default: %(default)s)")
    p.add_argument("--steps", default=None,
                   help="comma-separated subset of: environment, correctness, jobs, simulator, "
                        "speed, reproduce (default: all)")
    p.set_defaults(handler=_run_gpu_check)


def _run_gpu_check(args: argparse.Namespace) -> int:
    from .gpucheck import STEPS, GpuCheck, summary

    steps = STEPS if args.steps is None else [s.strip() for s in args.steps.split(",") if s.strip()]
    try:
        check = GpuCheck(args.out, device=args.device, quick=args.quick, minutes=args.minutes,
                         steps=steps)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = check.run()
    print(summary(report))
    failed = any(s["status"] == "failed" for s in report["steps"]) or bool(report["out_error"])
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    # Run as ``python -m core`` argv[0] is this file's path; name the command as typed instead.
    prog = "python -m core" if sys.argv[0].endswith("__main__.py") else None
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Relaxed-Equivariance Explorer: command line tools.")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    _add_bench(commands)
    _add_generate(commands)
    _add_import(commands)
    _add_info(commands)
    _add_train(commands)
    _add_evaluate(commands)
    _add_runs(commands)
    _add_sweep(commands)
    _add_precompute(commands)
    _add_pretrain(commands)
    _add_reproduce(commands)
    _add_discover(commands)
    _add_gpu_check(commands)
    _add_execute(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

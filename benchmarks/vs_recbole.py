"""Training speed against RecBole 1.2.1's SASRec: both trained side by side, one after the other, on this machine.

For every dataset, RecBole's SASRec (full cross-entropy, in its own virtual environment, through
benchmarks/recbole_sasrec.py) and ours (configs/scientific_sasrec.yaml with the same sizes, batch size and
patience) train to early stopping on the same CPU threads. The headline is time to quality: the seconds our
model needs to reach RecBole's best validation NDCG@10, against the seconds RecBole needs for it.
Writes the --output report (JSON) and prints a table.

The two runs never overlap. RecBole's venv (default .venv-recbole) is created on the first run.

Example (R = benchmarks/results/speed_vs_recbole_Scientific):
    python -m benchmarks.vs_recbole --datasets Scientific --threads 2 --output $R/new.json [--skip-install]
    # ours (3 seeds) against the RecBole run of an earlier report (same machine, threads, patience)
    python -m benchmarks.vs_recbole --datasets Scientific --seeds 0 1 2 --batch-size 1024 \\
        --recbole-from $R/recbole_and_ours_unpacked.json --output $R/batch1024.json
    # more arguments for our runs only, after --
    python -m benchmarks.vs_recbole --datasets ml-100k --output O -- --data.init_args.target.init_args.train_stride 5
    # RecBole alone (no --seeds), then an earlier report's runs of ours compared with it, without training again
    python -m benchmarks.vs_recbole --datasets ml-100k --seeds --recbole-max-epochs 20 --output rb.json
    python -m benchmarks.vs_recbole --datasets ml-100k --recbole-from rb.json --ours-from ours.json \\
        --output both.json
    # RecBole with several seeds against ours with several: python -m benchmarks.pool_vs_recbole
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from benchmarks.recbole_sasrec import BATCH_SIZE, SASREC
from benchmarks.runs import portable, provenance, run_seed, stop_fits_on_sigterm
from benchmarks.vs_recbole_report import across_seeds, compare, format_table, recbole_summary

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "scientific_sasrec.yaml"
RECBOLE_RUNNER = ROOT / "benchmarks" / "recbole_sasrec.py"
# torch 2.13.0 requires setuptools>=77.0.3, so "setuptools<70" cannot be installed next to it; ray 2.6.3 (imported by
# recbole.quick_start) needs pkg_resources, which setuptools removed in 81.
RECBOLE_REQUIREMENTS = ["recbole==1.2.1", "torch==2.13.0", "numpy<2", "setuptools>=77.0.3,<81"]
DATASETS = {"Scientific": "amazon/Scientific", "ml-100k": "movielens/ml-100k"}  # name → folder under --data-root


def sasrec_flag(key: str) -> str:
    """Our CLI flag of a ``SASREC`` setting: the data sets ``max_len`` (the model reads it), the model the rest."""
    return "--data.init_args.max_len" if key == "max_len" else f"--model.{key}"


MODEL_ARGS = [arg for key, value in SASREC.items() for arg in (sasrec_flag(key), str(value))]


# ---------------------------------------------------------------- running both sides


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def ensure_recbole_venv(venv: Path, skip_install: bool) -> Path:
    """The venv's python; creates the venv and installs RecBole unless ``skip_install``."""
    python = venv / "bin" / "python"
    if skip_install:
        if not python.exists():
            raise SystemExit(f"--skip-install: {python} does not exist; run once without --skip-install")
        return python
    if not python.exists():
        print(f"creating {venv}", flush=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    print(f"installing {' '.join(RECBOLE_REQUIREMENTS)} into {venv}", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", *RECBOLE_REQUIREMENTS], check=True)  # output shown
    return python


def resolve_dataset(name: str) -> tuple[str, str]:
    """(folder under the data root, domain name): a known name (Scientific, ml-100k) or a path like amazon/Office."""
    folder = DATASETS.get(name, name)
    return folder, Path(folder).name


def run_recbole(python: Path, data_root: Path, folder: str, args: argparse.Namespace, out: Path) -> dict:
    path = data_root / folder
    cmd = [str(python), str(RECBOLE_RUNNER), "--data-path", str(path.parent), "--dataset", path.name,
           "--epochs", str(args.recbole_max_epochs), "--patience", str(args.patience), "--threads", str(args.threads),
           "--seed", str(args.seed), "--output", str(out)]  # fmt: skip
    if args.recbole_time_budget is not None:
        cmd += ["--time-budget", str(args.recbole_time_budget)]
    print(f"\n== RecBole SASRec on {folder}: {shlex.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, env=thread_env(args.threads))  # RecBole's epoch log is the progress report
    return json.loads(out.read_text())


def our_config(max_epochs: int, patience: int, path: Path) -> Path:
    """configs/scientific_sasrec.yaml with our epoch cap and early-stopping patience, reading every interaction."""
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["trainer"]["max_epochs"] = max_epochs
    # Every interaction, as RecBole reads them: the loader's default max_history (each user's latest 51) drops about
    # half of ml-100k (the Scientific file is already capped at that). Set here: jsonargparse turns a command-line
    # "null" for this nested argument into the string "None".
    cfg["data"]["init_args"]["target"]["init_args"]["max_history"] = None
    stoppers = [cb for cb in cfg["trainer"]["callbacks"] if cb["class_path"].endswith("EarlyStopping")]
    assert len(stoppers) == 1, f"expected one early-stopping callback in {CONFIG}"
    stoppers[0]["init_args"]["patience"] = patience
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def our_args(
    data_root: Path | str, folder: str, max_epochs: int, batch_size: int = BATCH_SIZE, extra: Sequence[str] = ()
) -> list[str]:
    """Our CLI arguments: RecBole's sizes, then ``extra`` (the command line's, after --), which win."""
    return ["--data.init_args.data_root", str(data_root), "--data.init_args.target.init_args.path", folder,
            "--data.init_args.target.init_args.batch_size", str(batch_size), *MODEL_ARGS,
            "--trainer.max_epochs", str(max_epochs), "--trainer.enable_progress_bar", "false", *extra]  # fmt: skip


def run_ours(data_root: Path, folder: str, domain: str, args: argparse.Namespace, work: Path, seed: int) -> dict:
    config = our_config(args.max_epochs, args.patience, work / "sasrec_base.yaml")
    extra = our_args(data_root, folder, args.max_epochs, args.batch_size, args.extra)
    print(f"\n== ours (rec-transfer SASRec) on {folder}: {config} {shlex.join(extra)}", flush=True)
    # run_seed's subprocess inherits our environment: OMP_NUM_THREADS (set in main) fixes torch's thread count.
    results = run_seed(config, seed, f"ours-{domain}-seed{seed}", extra, work)
    print(f"   done in {results['wall_seconds']} s ({len(results['val_history'])} epochs)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="Scientific, ml-100k or group/name")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both (OMP_NUM_THREADS)")
    parser.add_argument("--max-epochs", type=int, default=300, help="our epoch cap")
    parser.add_argument("--recbole-max-epochs", type=int, default=300)
    parser.add_argument(
        "--recbole-time-budget",
        type=float,
        default=None,
        help="seconds of RecBole's fit after which it starts no new epoch and tests its best so far (default: none)",
    )
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience of both (validations)")
    parser.add_argument("--seed", type=int, default=0, help="RecBole's seed")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=[0],
        help="ours: one run per seed, one after another; none: RecBole only",
    )
    parser.add_argument("--recbole-venv", default=".venv-recbole")
    parser.add_argument("--skip-install", action="store_true", help="reuse --recbole-venv as it is")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"ours (RecBole's is {BATCH_SIZE})")
    parser.add_argument(
        "--recbole-from", default=None, help="reuse the RecBole runs of an earlier report (same threads, patience)"
    )
    parser.add_argument(
        "--ours-from",
        default=None,
        help="reuse our runs (all its seeds) of an earlier report instead of training (same threads, patience)",
    )
    parser.add_argument("--output", required=True, help="the JSON report to write")
    parser.add_argument("extra", nargs="*", help="more CLI arguments for our runs only, after --")
    args = parser.parse_args()
    stop_fits_on_sigterm()
    if args.ours_from and args.extra:
        parser.error("arguments after -- are for new runs of ours; --ours-from trains none")

    os.environ.update(thread_env(args.threads))  # for our subprocesses (run_seed passes our environment on)
    torch.set_num_threads(args.threads)  # so that machine() reports it
    data_root = Path(args.data_root).resolve()
    earlier = reused(args.recbole_from, "recbole", args) if args.recbole_from else None
    earlier_ours = reused(args.ours_from, "ours", args) if args.ours_from else None
    python = None if earlier else ensure_recbole_venv(Path(args.recbole_venv), args.skip_install)

    results, raw = {}, {}
    with tempfile.TemporaryDirectory(prefix="speed_vs_recbole_") as tmp:
        for name in args.datasets:
            folder, domain = resolve_dataset(name)
            work = Path(tmp) / domain
            work.mkdir()
            # One after the other, never at once: each gets the same threads to itself.
            if earlier:
                recbole = earlier["raw"][domain]["recbole"]
            else:
                recbole = run_recbole(python, data_root, folder, args, work / "recbole.json")
            per_seed, raw[domain] = {}, {"ours": {}, "recbole": recbole}
            print(f"RecBole on {domain}: {json.dumps(recbole_summary(recbole))}", flush=True)
            if earlier_ours:
                runs, max_epochs = earlier_ours["raw"][domain]["ours"].items(), earlier_ours["settings"]["max_epochs"]
            else:  # lazily: one after the other, each printed as it ends
                runs = ((str(s), run_ours(data_root, folder, domain, args, work, s)) for s in args.seeds)
                max_epochs = args.max_epochs
            for seed, ours in runs:
                per_seed[seed] = compare(ours, recbole, domain, args.patience, max_epochs)
                keep = ("val_history", "fit_seconds", "wall_seconds", "mean_train_epoch_seconds", "target_only")
                raw[domain]["ours"][seed] = {k: ours.get(k) for k in keep}
                print(format_table({f"{domain}, ours seed {seed}": per_seed[seed]}), flush=True)
            results[domain] = {"seeds": per_seed, "across_seeds": across_seeds(per_seed)}
            write_report(args, results, raw, earlier, earlier_ours)  # after every dataset: keeps results
    every_seed = {f"{d}, ours seed {s}": c for d, r in results.items() for s, c in r["seeds"].items()}
    print("\n== summary" + format_table(every_seed))
    for domain, r in results.items():
        print(f"{domain}, across our seeds: {json.dumps(r['across_seeds'])}")
    print(f"\nwrote {args.output}")


def reused(report: str, side: str, args: argparse.Namespace) -> dict:
    """An earlier report whose runs of ``side`` ("recbole" or "ours") stand in for new ones; only if measured the
    same way."""
    earlier = json.loads(Path(report).read_text())
    settings = earlier["settings"]
    flag = f"--{side}-from {report}"
    if earlier.get("threads") != args.threads or settings["patience"] != args.patience:
        raise SystemExit(
            f"{flag}: measured with {earlier.get('threads')} threads and patience "
            f"{settings['patience']}, not {args.threads} and {args.patience}"
        )
    missing = [n for n in args.datasets if not earlier.get("raw", {}).get(resolve_dataset(n)[1], {}).get(side)]
    if missing:
        raise SystemExit(f"{flag} has no {side} run for {missing}")
    return earlier


def write_report(
    args: argparse.Namespace,
    results: dict,
    raw: dict,
    earlier: dict | None = None,
    earlier_ours: dict | None = None,
) -> None:
    def source(flag: str, report: dict | None) -> dict | None:
        return {"report": portable(flag), **{k: report[k] for k in ("command", "git_commit")}} if report else None

    if earlier_ours:  # our side as it was run then
        model, ours = earlier_ours["settings"]["model"], earlier_ours["settings"]["ours"]
    else:
        s = SASREC
        model = (
            f"SASRec, hidden {s['hidden_size']}, inner {s['inner_size']}, {s['layers']} layers, {s['heads']} heads, "
            f"dropout {s['dropout']}, max_len {s['max_len']}, full softmax CE, Adam(W) lr 1e-3, no weight decay"
            + (f"; ours with {shlex.join(args.extra)}" if args.extra else "")
        )
        ours = {
            "config": str(CONFIG.relative_to(ROOT)),
            "args": our_args("<data_root>", "<dataset>", args.max_epochs, args.batch_size, args.extra),
        }
    report = {
        **provenance(),
        "threads": args.threads,
        "settings": {
            "datasets": {resolve_dataset(n)[1]: resolve_dataset(n)[0] for n in args.datasets},
            "data_root": "<data_root>",  # a folder of this machine: not for a committed report
            "max_epochs": earlier_ours["settings"]["max_epochs"] if earlier_ours else args.max_epochs,
            "recbole_max_epochs": args.recbole_max_epochs,
            "recbole_time_budget": args.recbole_time_budget,
            "patience": args.patience,
            "seed": args.seed,
            "seeds_ours": sorted({int(s) for r in results.values() for s in r["seeds"]})
            if earlier_ours
            else args.seeds,
            "batch_size": {
                "ours": earlier_ours["settings"]["batch_size"]["ours"] if earlier_ours else args.batch_size,
                "recbole": BATCH_SIZE,
            },
            "recbole_from": source(args.recbole_from, earlier),
            "ours_from": source(args.ours_from, earlier_ours),
            "model": model,
            "ours": ours,
            "recbole": {"runner": str(RECBOLE_RUNNER.relative_to(ROOT)), "requirements": RECBOLE_REQUIREMENTS},
            "notes": [
                "Time to quality is the fair comparison; seconds per epoch are not like for like: RecBole trains on "
                "every prefix of every history as its own sequence (one target each), ours on every history once "
                "with a target at every position (the same targets, fewer sequences).",
                "Seconds are wall-clock since the start of fit, taken at the end of each validation (before the "
                "checkpoint is written); train seconds per epoch time the training steps only.",
                "Early stopping: ours stops after `patience` validations without a strict improvement (Lightning), "
                "RecBole after patience + 1 (its stopping_step counts strictly more than `patience`); this only "
                "lengthens RecBole's run, not its seconds to best.",
                "Both test the best-validation checkpoint on the last item of every history (leave-one-out, full "
                "ranking).",
                "Ours draws random batches of histories and packs several short ones into each row of 50 tokens "
                "(attention kept inside each history); RecBole pads every sequence to MAX_ITEM_LIST_LENGTH (50).",
                "RecBole runs once (--seed); ours once per --seeds, each compared with that one RecBole run.",
                "Ours reads every interaction (max_history null), as RecBole does; no filtering on either side.",
            ],
        },
        "results": results,
        "raw": raw,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

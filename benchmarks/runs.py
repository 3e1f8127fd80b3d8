"""Runs shipped configs through ``rec-transfer fit`` (one subprocess per seed) and aggregates the results."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml

from benchmarks.stats import best_validation, spread

ROOT = Path(__file__).resolve().parents[1]  # the checkout: configs, git and benchmarks/results live here
DATA_ROOT_FLAGS = ("--data-root", "--data.init_args.data_root")


def git_commit() -> str:
    named = os.environ.get("REC_TRANSFER_GIT_COMMIT")  # a copy of the tree run elsewhere (a GPU machine) names its own
    if named:
        return named
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor()})"
    return info


def portable(arg: str | Path) -> str:
    """``arg`` as a committed report may show it: a path inside the checkout relative to it, another absolute path
    as ``<abs>/<its name>`` (it names a folder of one machine), anything else unchanged."""
    path = Path(arg)
    if not path.is_absolute():
        return str(arg)
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else f"<abs>/{path.name}"


def command_line(argv: list[str] | None = None) -> str:
    """The command that started this process, as typed at the repository root, e.g. ``python -m
    benchmarks.transfer --target Office``; paths through :func:`portable`, the data root as ``<data_root>``."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    head = ["python", "-m", f"benchmarks.{script.stem}"] if script.parent == ROOT / "benchmarks" else ["python"]
    if len(head) == 1:
        head.append(portable(argv[0]))
    args = []
    for before, arg in zip(argv, argv[1:], strict=False):
        flag, eq, _ = arg.partition("=")
        if before in DATA_ROOT_FLAGS:
            args.append("<data_root>")
        elif eq and flag in DATA_ROOT_FLAGS:
            args.append(f"{flag}=<data_root>")
        else:
            args.append(portable(arg))
    return shlex.join(head + args)


def provenance() -> dict:
    """What every benchmark report starts with: the command line, the git commit, the machine and when (UTC).

    When matters: this machine's speed changes from day to day, so only seconds measured the same day compare.
    """
    when = datetime.now(UTC).isoformat(timespec="seconds")
    return {"command": command_line(), "git_commit": git_commit(), "machine": machine(), "when": when}


def not_rerun(report: dict, rerun) -> dict:
    """The results of an earlier benchmark ``report`` whose names are not in ``rerun``, to keep in the new one.

    Each carries the command, commit and machine that measured it (``provenance``); results of reports
    older than per-result provenance get the report's own.
    """
    kept = {name: res for name, res in report.get("results", {}).items() if name not in rerun}
    for res in kept.values():
        measured = {k: report.get(k) for k in ("command", "git_commit", "machine")}
        res.setdefault("provenance", measured | ({"when": report["when"]} if "when" in report else {}))
    return kept


def target_name(cfg: dict) -> str:
    """The target domain's name in a transfer or a one-domain config, as its data module names it."""
    from rec_transfer.data.datamodule import default_domain_name  # here: importing it loads Lightning

    data = cfg.get("data", {}).get("init_args", {})
    target = data.get("target", data)
    domain = target.get("init_args", target)
    return domain.get("name") or default_domain_name(str(domain.get("path", "unknown")))


def prepare_config(config: str | Path, run_name: str, out_dir: Path) -> Path:
    """A copy of ``config`` whose checkpoints, logs and results go to their own places for this run."""
    cfg = yaml.safe_load(Path(config).read_text())
    trainer = cfg.setdefault("trainer", {})
    callbacks = trainer.setdefault("callbacks", [])
    if not any(cb["class_path"].endswith("Checkpoint") for cb in callbacks):  # the CLI's default one, made explicit
        callbacks.append({"class_path": "rec_transfer.callbacks.LatestCheckpoint",
                          "init_args": {"monitor": "hp/val_ndcg@10", "mode": "max", "save_last": True}})  # fmt: skip
    for cb in callbacks:
        if cb["class_path"].endswith("Checkpoint"):  # ModelCheckpoint and subclasses such as LatestCheckpoint
            cb["init_args"]["dirpath"] = str(out_dir / "checkpoints" / run_name)
    logger = trainer.setdefault(
        "logger",
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "lightning_logs"}},
    )
    if isinstance(logger, dict):  # by target too: two targets' runs of one variant and seed never share a folder
        logger.setdefault("init_args", {})["name"] = f"bench/{target_name(cfg)}/{run_name}"
    cfg["results_json"] = str(out_dir / f"{run_name}.json")
    path = out_dir / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


_CHILDREN: set[subprocess.Popen] = set()  # the fits running now, stopped with this process (stop_fits_on_sigterm)
_STOPPING = threading.Event()  # set by SIGTERM: no new fit starts (the pool's queued seeds would)


def run_logged(cmd: list[str], log, cwd: Path | None = None) -> int:
    """Runs ``cmd`` (in ``cwd``) with its output to the open file ``log``; its exit code. Registered while it runs, so
    that a SIGTERM to this process stops it too (``stop_fits_on_sigterm``); after one, nothing new starts."""
    if _STOPPING.is_set():
        raise RuntimeError("stopping (SIGTERM): not starting " + shlex.join(cmd))
    with subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT) as proc:
        _CHILDREN.add(proc)
        try:
            if _STOPPING.is_set():  # the signal came between the check above and the registration
                proc.terminate()
            return proc.wait()
        finally:
            _CHILDREN.discard(proc)


def stop_fits_on_sigterm() -> None:
    """On SIGTERM (``kill``), terminate the fits this process started, start no more, and exit. Without it a killed
    benchmark leaves its fits running, and a rerun would resume the same run beside them. Ctrl-C needs nothing: the
    terminal signals the fits too. Only from the main thread (where Python runs signal handlers); elsewhere nothing
    is installed."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        _STOPPING.set()
        for proc in list(_CHILDREN):
            proc.terminate()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def run_seed(
    config: str | Path, seed: int, run_name: str, extra_args: list[str], out_dir: Path, reuse: bool = False
) -> dict:
    """``rec-transfer fit`` for one seed; returns its results JSON plus the wall time.

    With ``reuse``, a run whose results JSON is already in ``out_dir`` (a finished run of an interrupted
    benchmark) is read back instead of trained again, and a run that was interrupted (killed, the machine gone) is
    resumed from its ``last.ckpt``, if it ran the same config, seed and arguments at the same git commit; otherwise
    it is trained again from the start. ``wall_seconds`` counts every attempt (an interrupted one until its log's
    last line).
    """
    results_path = out_dir / f"{run_name}.json"
    started_path = out_dir / f"{run_name}.started.json"  # which run the checkpoints in out_dir belong to
    log = out_dir / f"{run_name}.log"
    last = out_dir / "checkpoints" / run_name / "last.ckpt"
    commit = git_commit()  # the code this run imports: at its start, not whenever the report is written
    key = {"commit": commit, "config": Path(config).read_text(), "seed": seed, "args": list(extra_args)}
    if reuse and results_path.exists():
        results = json.loads(results_path.read_text())
        if results.get("run_key") == key:  # written below once the run finished
            print(f"{run_name}: reusing the finished run in {results_path}", flush=True)
            return results
        print(f"{run_name}: the results in {results_path} are of another run or commit; training again", flush=True)
    started = json.loads(started_path.read_text()) if started_path.exists() else {}
    resume = reuse and last.exists() and log.exists() and started.get("run_key") == key
    earlier_seconds = started.get("earlier_seconds", 0.0) + log.stat().st_mtime - started["at"] if resume else 0.0
    if resume:
        print(f"{run_name}: resuming the interrupted run from {last}", flush=True)
    else:
        shutil.rmtree(out_dir / "checkpoints" / run_name, ignore_errors=True)  # another run's, if any
    started_path.write_text(json.dumps({"run_key": key, "at": time.time(), "earlier_seconds": earlier_seconds}))
    cfg = prepare_config(config, run_name, out_dir)
    cmd = [sys.executable, "-m", "rec_transfer.cli", "fit", "--config", str(cfg), "--seed_everything", str(seed),
           *extra_args, *(["--ckpt_path", str(last)] if resume else [])]  # fmt: skip
    start = time.perf_counter()
    with log.open("a" if resume else "w") as f:
        if resume:
            f.write(f"--- resumed from {last}\n")
            f.flush()
        code = run_logged(cmd, f)
    if code != 0:
        raise RuntimeError(f"run {run_name} failed ({code}):\n{log.read_text()[-4000:]}")
    results = json.loads(results_path.read_text())
    results["wall_seconds"] = round(earlier_seconds + time.perf_counter() - start, 1)
    results["resumed"] = resume
    results["git_commit"] = commit
    results["run_key"] = key  # marks the run finished, for reuse
    results_path.write_text(json.dumps(results, indent=2))
    return results


def zero_shot_test(results: dict) -> dict[str, float]:
    """The zero-shot metrics on the target's test split from a run's results JSON (empty without transfer)."""
    return {k: v for k, v in results.get("zero_shot", {}).items() if k.startswith("zeroshot_test/")}


def summarize(per_seed: list[dict], prefix: str) -> dict:
    """Mean and (sample) standard deviation of every ``prefix*`` metric over seeds, with the values."""
    keys = sorted({k for r in per_seed for k in r if k.startswith(prefix)})
    out = {}
    for k in keys:
        values = [r[k] for r in per_seed if k in r]
        s = spread(values)
        out[k] = {"mean": s["mean"], "std": s["std"], "values": values}
    return out


def bench_configs(
    configs: dict[str, str | Path],
    seeds: list[int],
    extra_args: list[str],
    parallel: int = 1,
    result_keys: tuple[str, ...] = ("transfer", "target_only"),
    work_dir: str | Path | None = None,
) -> dict:
    """Runs every config for every seed (``parallel`` runs at a time); per-seed results and summaries by name.

    A run's test metrics are read from the first of ``result_keys`` its results hold (a transfer run
    writes ``transfer``, a target-only run ``target_only``); zero-shot test metrics come along.
    Runs keep their logs, checkpoints and results in ``work_dir`` (default: a temporary folder); rerun
    with the same ``work_dir`` after a crash and the runs of the same commit, config, seed and arguments that
    finished are reused, not trained again, and those interrupted resume from their ``last.ckpt`` (``run_seed``).
    """
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="rec_transfer_bench_") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        reuse = work_dir is not None
        jobs = [(name, config, seed) for name, config in configs.items() for seed in seeds]
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = {
                job: pool.submit(run_seed, job[1], job[2], f"{job[0]}-seed{job[2]}", extra_args, work, reuse)
                for job in jobs
            }
        for name, config in configs.items():
            per_seed = []
            for seed in seeds:
                row = seed_result(seed, futures[(name, config, seed)].result(), result_keys)
                test = {k: v for k, v in row.items() if k.startswith(("test/", "zeroshot_test/"))}
                print(f"{name} seed {seed}: {json.dumps(test)}", flush=True)
                per_seed.append(row)
            out[name] = variant_result(str(config), per_seed)
    return out


def seed_result(seed: int, r: dict, result_keys: tuple[str, ...]) -> dict:
    """One seed's entry of a report from its run's results JSON: timing, the best validation, test metrics."""
    test = next((r[k] for k in result_keys if k in r), {})
    timing = {k: r[k] for k in ("fit_seconds", "epochs", "mean_train_epoch_seconds", "wall_seconds")}
    timing["git_commit"] = r.get("git_commit", "unknown")
    best = r.get("best_validation")  # the fit's own best: the checkpoint it tested
    if best is None and (found := best_validation(r.get("val_history", []))):
        best = found[1]  # a results JSON from before fits kept their best
    if best is not None:
        timing |= {"best_val_ndcg@10": best["ndcg@10"], "best_epoch": best["epoch"]}
    return {"seed": seed, **timing, **test, **zero_shot_test(r)}


def variant_result(config: str, per_seed: list[dict]) -> dict:
    """One variant's entry of a report: its seeds' results, their summary and mean seconds per train epoch."""
    summary = summarize(per_seed, "test/") | summarize(per_seed, "zeroshot_test/")
    epoch_s = round(statistics.fmean(r["mean_train_epoch_seconds"] for r in per_seed), 3)
    return {"config": config, "per_seed": per_seed, "summary": summary, "mean_train_epoch_seconds": epoch_s}

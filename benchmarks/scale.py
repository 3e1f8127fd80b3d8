"""How cost and memory grow with the catalogue: one training epoch and a full-ranking test of every user, per size.

Rows: a synthetic domain of 10k, 100k and 1M items (``benchmarks.scale_data``: RecBole files read by the package's
reader; item texts encoded by a tiny random one-layer BERT through the sharded text cache), the text model with the
sampled softmax; and Scientific with the shipped text recipe (``configs/scientific_target_only.yaml``, its own loss
and, for comparison, the sampled one) and SASRec (``configs/scientific_sasrec.yaml``). Each row runs in fresh
processes: one prepares the data (reading, preprocessing, text vectors) and one trains an epoch and tests; each
reports its own peak RSS. ``--quality`` also trains the Scientific text model to early stopping with the full and
with the sampled softmax (one after the other, one thread each) and reports their test metrics.

Writes ``scale.json`` and ``scale.md`` to ``--output-dir`` and prints the table and one PASS/FAIL line per goal.

Example:
    OMP_NUM_THREADS=2 python -m benchmarks.scale --data-root ../shared/data --quality
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from lightning.pytorch.callbacks import Callback

from benchmarks.runs import ROOT, git_commit, provenance, run_logged, run_seed, stop_fits_on_sigterm
from benchmarks.scale_data import synthetic_texts, write_synthetic_domain, write_tiny_encoder
from benchmarks.scale_report import check_goals, markdown, peak_rss_mb, print_table

SIZES = (10_000, 100_000, 1_000_000)
HISTORY = 40  # mean interactions per synthetic user (30 to 51: the default history cap keeps all of them)
MIN_USERS = 12_500  # small catalogues still train and test enough users to time
SETTINGS = {
    "synthetic": f"users = max({MIN_USERS}, items / 8), {HISTORY} interactions each on average (30 to 51); "
    "text model hidden 64, 2 layers, sampled softmax (1024 negatives), batches of 64 histories; item texts through "
    "a random 1-layer BERT of width 32 (WordPiece vocabulary of 1000), vectors centred",
    "scientific": "configs/scientific_target_only.yaml (its full softmax, and sampled), configs/scientific_sasrec.yaml",
    "each row": "a process prepares the data (read, preprocess, text vectors), a fresh one trains an epoch (no "
    "validation) and tests every user with full ranking; peak RSS is each process's own",
}
SCIENTIFIC_CONFIGS = {"text": "configs/scientific_target_only.yaml", "sasrec": "configs/scientific_sasrec.yaml"}


def synthetic_shape(items: int) -> dict[str, int]:
    """Users and interactions of the synthetic domain of ``items`` items: 1M items get 125k users, 5M interactions.

    Fewer users with longer histories than a real shop has: testing every user against 1M items costs users x items,
    and 5M interactions are what a 1M catalogue needs at least.
    """
    users = max(MIN_USERS, items // 8)
    return {"items": items, "users": users, "interactions": users * HISTORY}


def size_name(items: int) -> str:
    return f"synthetic_{items // 1_000_000}M" if items % 1_000_000 == 0 else f"synthetic_{items // 1000}k"


def synthetic_config(folder: Path, encoder: Path, cache_dir: Path, loss: str) -> dict:
    """The text model (hidden 64, two layers) on a synthetic domain: the sizes of the shipped recipe, but narrower."""
    model = {"mode": "text", "hidden_size": 64, "layers": 2, "heads": 2, "dropout": 0.5, "max_len": 50}
    model |= {"similarity": "cosine", "temperature": 0.07, "lr": 0.001, "loss": loss}
    # 64 histories of about 37 targets: ~2,400 targets a batch, as 256 histories of about 9 (Scientific's) would be.
    target = {"path": str(folder), "max_len": 50, "batch_size": 64, "eval_batch_size": 1024}
    # The tiny random encoder's vectors share one direction: centred, as the package advises for such vectors.
    target["text_encoder"] = {"model_name": str(encoder), "batch_size": 1024, "center": True}
    target["cache_dir"] = str(cache_dir)
    target = {"class_path": "rec_transfer.data.DomainDataModule", "init_args": target}
    data = {"class_path": "rec_transfer.data.TransferDataModule", "init_args": {"target": target}}
    return {"seed_everything": 0, "model": model, "data": data}


def scientific_config(which: str, data_root: str, cache_dir: Path, loss: str | None) -> dict:
    """A shipped Scientific config with its data under ``data_root`` and the cache in ``cache_dir``."""
    cfg = yaml.safe_load((ROOT / SCIENTIFIC_CONFIGS[which]).read_text())
    cfg = {"seed_everything": cfg.get("seed_everything", 0), "model": cfg["model"], "data": cfg["data"]}
    cfg["data"]["init_args"]["data_root"] = data_root
    cfg["data"]["init_args"]["target"]["init_args"]["cache_dir"] = str(cache_dir)
    if loss is not None:
        cfg["model"]["loss"] = loss
    return cfg


def one_epoch(cfg: dict, root_dir: Path, trainer_args: dict | None = None) -> dict:
    """``cfg`` as a config for one training epoch without validation, checkpoints or logs, then a test; the CLI's
    copy of the config goes to ``root_dir``; ``trainer_args`` adds Trainer settings (e.g. ``precision``)."""
    trainer = {**(trainer_args or {}), "max_epochs": 1, "limit_val_batches": 0, "num_sanity_val_steps": 0}
    trainer["logger"] = False
    trainer["default_root_dir"] = str(root_dir)
    trainer |= {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer["callbacks"] = [{"class_path": "benchmarks.scale.StageTimer"}]
    return cfg | {"trainer": trainer}


class StageTimer(Callback):
    """Wall and CPU seconds (this process, all threads) of the training epoch and of the test loop.

    CPU seconds tell how much work a stage was on a CPU shared with other jobs, where wall seconds also count the
    time others held the cores.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, tuple[float, float]] = {}

    def _start(self) -> None:
        self._began = (time.perf_counter(), time.process_time())

    def _end(self, stage: str) -> None:
        wall, cpu = self._began
        self.seconds[stage] = (time.perf_counter() - wall, time.process_time() - cpu)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._end("train")

    def on_test_epoch_start(self, trainer, pl_module) -> None:  # the model builds its item table inside
        self._start()

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._end("test")


def child(stage: str, config: Path) -> dict:
    """One stage of a row in this (fresh) process: ``prepare`` the data, or ``measure`` an epoch and a test."""
    import numpy as np

    from rec_transfer.callbacks import FitTimer
    from rec_transfer.cli import build_cli

    sys.argv = sys.argv[:1]  # the CLI reads its arguments from `args` alone
    cli = build_cli(["--config", str(config)], run=False)
    dm = cli.datamodule
    target = dm.target
    if stage == "prepare":
        start = time.perf_counter()
        dm.prepare_data()
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        dm.setup("fit")  # the text vectors: encoded here, read from the cache by the measuring process
        vectors_s = round(time.perf_counter() - start, 2)
        return {"read_preprocess_s": round(read_s, 2), "text_vectors_s": vectors_s, "peak_rss_mb": peak_rss_mb()}
    trainer, model = cli.trainer, cli.model
    trainer.fit(model, datamodule=dm)
    epoch_s = next(c for c in trainer.callbacks if isinstance(c, FitTimer)).train_epoch_seconds[-1]
    metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
    timer = next(c for c in trainer.callbacks if type(c).__name__ == "StageTimer")  # also when run as __main__
    (_, train_cpu_s), (test_s, test_cpu_s) = timer.seconds["train"], timer.seconds["test"]
    domain = target.domain
    offsets = target._flat[0]
    train_targets = int(np.maximum(np.diff(offsets) - 3, 0).sum())  # s_2 … s_{n-2} of every history
    users, items = domain.num_users, domain.num_items
    return {
        "domain": domain.name,
        "model": "sasrec" if model.hparams.mode == "id" else "text",
        "items": items,
        "users": users,
        "interactions": domain.num_interactions,
        "loss": model.hparams.loss,
        "batch_size": target.batch_size,
        "hidden_size": model.hparams.hidden_size,
        "train_targets": train_targets,
        "train_epoch_s": round(epoch_s, 2),
        "train_targets_per_s": round(train_targets / epoch_s, 1),
        "train_cpu_s": round(train_cpu_s, 2),
        "train_targets_per_cpu_s": round(train_targets / train_cpu_s, 1),
        "eval_s": round(test_s, 2),
        "eval_cpu_s": round(test_cpu_s, 2),
        "eval_user_items_per_cpu_s": round(users * items / test_cpu_s),
        "eval_users_per_s": round(users / test_s, 1),
        "eval_user_items_per_s": round(users * items / test_s),
        "test_ndcg@10_after_one_epoch": round(float(metrics[f"test/{domain.name}/ndcg@10"]), 5),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_child(stage: str, config: dict, work: Path, name: str) -> dict:
    """Runs one stage in a fresh process (its output in ``<work>/<name>.<stage>.log``) and returns its report."""
    path = work / f"{name}.{stage}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out, log = work / f"{name}.{stage}.json", work / f"{name}.{stage}.log"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.scale", "--child", stage, "--config", str(path), "--child-out", str(out)]
    load = os.getloadavg()[0]
    with log.open("w") as f:
        code = run_logged(cmd, f, cwd=ROOT)
    if code != 0 or not out.exists():
        raise RuntimeError(f"{name} {stage} failed ({code}):\n{log.read_text()[-4000:]}")
    return json.loads(out.read_text()) | {"load_avg_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}


def run_row(name: str, config: dict, work: Path, reuse: bool, trainer_args: dict | None = None) -> dict:
    """A row: prepare, then measure (with ``trainer_args`` for the Trainer), each in its own process; a finished row
    of the same config and commit is read back with ``reuse``."""
    key = {"commit": git_commit(), "config": config} | ({"trainer": trainer_args} if trainer_args else {})
    done = work / f"{name}.row.json"
    if reuse and done.exists() and json.loads(done.read_text()).get("row_key") == key:
        print(f"{name}: reusing the finished row in {done}", flush=True)
        return json.loads(done.read_text())["row"]
    print(f"{name}: preparing", flush=True)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    prepare = run_child("prepare", config, work, name)
    print(f"{name}: training one epoch and testing every user", flush=True)
    row = run_child("measure", one_epoch(config, work / name, trainer_args), work, name)
    row |= {"prepare": prepare, "when": when, "git_commit": key["commit"]}  # a report may gather rows of several
    done.write_text(json.dumps({"row_key": key, "row": row}, indent=2))
    return row


def quality_runs(data_root: str, cache_dir: Path, work: Path) -> dict:
    """The Scientific text recipe trained to early stopping with its full softmax and with the sampled one, one
    after the other on one thread each; their test metrics and epochs."""
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the runs
    work.mkdir(parents=True, exist_ok=True)
    args = ["--data.init_args.data_root", data_root, "--trainer.enable_progress_bar", "false"]
    args += ["--data.init_args.target.init_args.cache_dir", str(cache_dir)]
    out = {}
    for loss in ("full", "sampled"):
        print(f"Scientific text model, {loss} softmax, to early stopping (one thread)", flush=True)
        r = run_seed(ROOT / SCIENTIFIC_CONFIGS["text"], 0, f"quality_{loss}", [*args, "--model.loss", loss], work, True)
        test = {k.rsplit("/", 1)[-1]: v for k, v in r["target_only"].items() if k.startswith("test/")}
        out[loss] = {f"test_{k}": v for k, v in test.items()} | {
            "epochs": r["epochs"],
            "mean_train_epoch_s": r["mean_train_epoch_seconds"],
            "fit_s": r["fit_seconds"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="synthetic catalogue sizes")
    parser.add_argument("--data-root", default="../shared/data", help="folder holding amazon/Scientific")
    parser.add_argument("--no-scientific", action="store_true", help="synthetic rows only")
    parser.add_argument("--quality", action="store_true", help="also train Scientific to early stopping, both losses")
    parser.add_argument("--work-dir", default="lightning_logs/bench_scale", help="data, caches, logs, finished rows")
    parser.add_argument("--reuse", action="store_true", help="read back finished rows of the same commit and config")
    parser.add_argument("--output-dir", default="benchmarks/results/scale")
    parser.add_argument("--child", choices=["prepare", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.child_out.write_text(json.dumps(child(args.child, args.config)))
        return

    stop_fits_on_sigterm()
    measured = provenance()
    environment = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}  # the quality runs: 1 thread
    load_start = round(os.getloadavg()[0], 2)
    work = Path(args.work_dir).resolve()
    cache_dir = work / "cache"
    work.mkdir(parents=True, exist_ok=True)
    data_root = str(Path(args.data_root).resolve())
    encoder = write_tiny_encoder(work / "tiny_encoder", synthetic_texts(50_000))
    rows = []
    for items in sorted(args.sizes):
        shape, name = synthetic_shape(items), size_name(items)
        start = time.perf_counter()
        folder = write_synthetic_domain(work / name, shape["items"], shape["users"], shape["interactions"])
        generate_s = round(time.perf_counter() - start, 2)
        row = run_row(name, synthetic_config(folder, encoder, cache_dir, "sampled"), work, args.reuse)
        rows.append(row | {"generate_s": generate_s})
    scientific = None
    if not args.no_scientific:
        for which, loss in (("text", None), ("text", "sampled"), ("sasrec", None)):
            cfg = scientific_config(which, data_root, cache_dir, loss)
            rows.append(run_row(f"Scientific_{which}_{cfg['model'].get('loss', 'full')}", cfg, work, args.reuse))
        text = next(r for r in rows if r["domain"] == "Scientific" and r["model"] == "text")
        sasrec = next(r for r in rows if r["domain"] == "Scientific" and r["model"] == "sasrec")
        scientific = {"sasrec_epoch_s": sasrec["train_epoch_s"], "text_epoch_s": text["train_epoch_s"]}
        scientific["text_loss"] = text["loss"]
        if args.quality:
            scientific["quality"] = quality_runs(data_root, cache_dir, work / "quality")
    report = {**measured, "environment": environment, "settings": SETTINGS, "rows": rows}
    report["load_avg_1min"] = [load_start, round(os.getloadavg()[0], 2)]
    report["scientific"] = scientific
    report["goals"] = check_goals(rows, scientific)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "scale.md").write_text(markdown(report))
    print_table(report)


if __name__ == "__main__":
    main()

"""RecBole 1.2.1 SASRec on one atomic-file dataset, timed: the baseline of benchmarks/vs_recbole.py.

Runs inside RecBole's own virtual environment (it never imports rec_transfer). Records, after every
validation, the seconds since training started and the validation NDCG@10, the seconds of every training
epoch (training only), and the test metrics of the best-validation model; writes them to --output as JSON.
With --time-budget, no new epoch starts once that many seconds of fit have passed, and the best model so
far is tested ("stopped": "time budget" in the JSON): a long run that still ends inside a session.

RecBole writes logs, TensorBoard files and checkpoints relative to the working directory; this script
works in a temporary folder, reads the data through a symlink to the .inter file there, and writes nothing
next to the data.

Example (inside .venv-recbole):
    python benchmarks/recbole_sasrec.py --data-path ../shared/data/amazon --dataset Scientific \\
        --epochs 300 --patience 10 --threads 2 --seed 0 --output recbole_scientific.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

# RecBole's SASRec sizes, named as rec_transfer's model arguments: the one model both sides of the speed benchmark
# train (benchmarks/vs_recbole.py passes them to ours; recbole_config maps them to RecBole's names).
SASREC = {"hidden_size": 64, "inner_size": 256, "layers": 2, "heads": 2, "dropout": 0.5, "max_len": 50}
BATCH_SIZE = 2048  # RecBole's training batch (of prefixes)


class OutOfTime(Exception):
    """Raised at the start of a training epoch once --time-budget seconds of fit have passed."""


def recbole_config(dataset: str, data_path: str, checkpoint_dir: str, epochs: int, patience: int, seed: int) -> dict:
    """RecBole's settings for SASRec with full cross-entropy, matched to configs/scientific_sasrec.yaml."""
    return {
        "model": "SASRec",
        "dataset": dataset,
        "data_path": data_path,
        "checkpoint_dir": checkpoint_dir,
        "use_gpu": False,
        "seed": seed,
        "reproducibility": True,
        "show_progress": False,
        "state": "INFO",
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
        "worker": 0,
        # Data: the three columns only (the .item files hold free text); no filtering, the data are k-core.
        "field_separator": "\t",
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "unload_col": None,
        "additional_feat_suffix": None,
        "rm_dup_inter": None,
        "val_interval": None,
        "threshold": None,
        "filter_inter_by_user_or_item": False,
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "normalize_all": False,  # ml-100k's bundled dataset YAML turns this on (harmless, but keep timestamps raw)
        "normalize_field": None,
        "MAX_ITEM_LIST_LENGTH": SASREC["max_len"],
        # Model
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "hidden_size": SASREC["hidden_size"],
        "inner_size": SASREC["inner_size"],
        "n_layers": SASREC["layers"],
        "n_heads": SASREC["heads"],
        "hidden_dropout_prob": SASREC["dropout"],
        "attn_dropout_prob": SASREC["dropout"],
        "hidden_act": "gelu",
        # Training and evaluation: leave-one-out by time, full ranking, early stopping on NDCG@10.
        "epochs": epochs,
        "train_batch_size": BATCH_SIZE,
        "eval_batch_size": 4096,
        "learner": "adam",
        "learning_rate": 0.001,
        "weight_decay": 0.0,
        "eval_step": 1,
        "stopping_step": patience,
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "full"},
        "metrics": ["NDCG", "Recall"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "valid_metric_bigger": True,
        "metric_decimal_place": 6,
    }


def link_dataset(data_path: Path, dataset: str, work: Path) -> Path:
    """``work/data/<dataset>/<dataset>.inter`` → the real file; returns ``work/data`` (RecBole's data_path)."""
    source = (data_path / dataset / f"{dataset}.inter").resolve()
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found (--data-path must hold the folder {dataset}/)")
    folder = work / "data" / dataset
    folder.mkdir(parents=True)
    (folder / f"{dataset}.inter").symlink_to(source)
    return work / "data"


def run(args: argparse.Namespace) -> dict:
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    with tempfile.TemporaryDirectory(prefix="recbole_sasrec_") as tmp:
        work = Path(tmp)
        data_root = link_dataset(Path(args.data_path), args.dataset, work)
        cwd = os.getcwd()
        os.chdir(work)  # RecBole's log_tensorboard/ (and log/, if anyone calls init_logger) land here
        try:
            cfg = recbole_config(
                args.dataset, str(data_root), str(work / "saved"), args.epochs, args.patience, args.seed
            )
            config = Config(model="SASRec", dataset=args.dataset, config_dict=cfg)
            init_seed(config["seed"], config["reproducibility"])
            torch.set_num_threads(args.threads)  # after init_seed, in case anything reset it
            dataset = create_dataset(config)
            logging.info("%s", dataset)
            sizes = {"num_users": dataset.user_num - 1, "num_items": dataset.item_num - 1}  # minus the padding id
            sizes["num_interactions"] = dataset.inter_num
            train_data, valid_data, test_data = data_preparation(config, dataset)
            init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
            model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
            trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

            train_epoch_seconds: list[float] = []
            val_history: list[dict] = []
            clock = {"start": 0.0, "valid_end": 0.0}
            train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

            def timed_train_epoch(*a, **kw):
                t = time.perf_counter()
                if args.time_budget is not None and t - clock["start"] >= args.time_budget:
                    raise OutOfTime  # no new epoch once the budget is spent; the best checkpoint is on disk
                out = train_epoch(*a, **kw)
                train_epoch_seconds.append(round(time.perf_counter() - t, 4))
                return out

            def timed_valid_epoch(*a, **kw):
                out = valid_epoch(*a, **kw)
                clock["valid_end"] = time.perf_counter()  # before RecBole saves its checkpoint, like ours
                return out

            def on_valid(epoch_idx: int, valid_score: float) -> None:
                seconds = round(clock["valid_end"] - clock["start"], 3)
                val_history.append({"epoch": epoch_idx, "seconds": seconds, "ndcg@10": round(float(valid_score), 6)})

            trainer._train_epoch, trainer._valid_epoch = timed_train_epoch, timed_valid_epoch
            clock["start"] = time.perf_counter()
            try:
                trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=on_valid)
                out_of_time = False
            except OutOfTime:
                out_of_time = True
            fit_seconds = time.perf_counter() - clock["start"]
            stopped_early = trainer.cur_step > trainer.stopping_step  # RecBole's own stopping criterion was met
            stopped = "early stopping" if stopped_early else "time budget" if out_of_time else "epoch cap"
            # trainer.evaluate(load_best_model=True) calls torch.load with torch>=2.6's weights_only default, which
            # rejects RecBole's checkpoint (it pickles the config); load our own file the way RecBole would.
            checkpoint = torch.load(trainer.saved_model_file, map_location=trainer.device, weights_only=False)
            trainer.model.load_state_dict(checkpoint["state_dict"])
            trainer.model.load_other_parameter(checkpoint.get("other_parameter"))
            test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        finally:
            os.chdir(cwd)

    # RecBole's best is the latest epoch reaching the highest score (it compares with >=).
    best = max(reversed(val_history), key=lambda h: h["ndcg@10"]) if val_history else None
    return {
        "dataset": args.dataset,
        "val_history": val_history,
        "train_epoch_seconds": train_epoch_seconds,
        "mean_train_epoch_seconds": round(sum(train_epoch_seconds) / max(1, len(train_epoch_seconds)), 4),
        "best_val_ndcg@10": best["ndcg@10"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "seconds_to_best": best["seconds"] if best else None,
        "fit_seconds": round(fit_seconds, 2),
        "test": {"ndcg@10": round(float(test["ndcg@10"]), 6), "recall@10": round(float(test["recall@10"]), 6)},
        "epochs_run": len(train_epoch_seconds),
        "max_epochs": args.epochs,
        "stopped_early": bool(stopped_early),
        "stopped": stopped,
        "time_budget": args.time_budget,
        "patience": args.patience,
        "threads": torch.get_num_threads(),
        "recbole_version": recbole.__version__,
        "torch_version": torch.__version__,
        **{k: int(v) for k, v in sizes.items()},
        "train_samples": len(train_data._dataset),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", required=True, help="folder holding the dataset folder (e.g. data/amazon)")
    parser.add_argument("--dataset", required=True, help="dataset folder and file name (e.g. Scientific, ml-100k)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--patience", type=int, default=10, help="RecBole's stopping_step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds of fit after which no new epoch starts; the best checkpoint so far is tested (default: none)",
    )
    parser.add_argument("--output", required=True, help="JSON file to write")
    args = parser.parse_args()
    if args.time_budget is not None and args.time_budget <= 0:
        parser.error("--time-budget must be positive (one epoch always runs, so there is a best model to test)")
    result = run(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}", flush=True)


if __name__ == "__main__":
    main()

"""Speed against RecBole: the comparison of one pair of runs, the runner's reports, and pooling many runs."""

import json
import statistics
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _load_vs_recbole():
    from benchmarks import vs_recbole

    return vs_recbole


def _ours(ndcgs: list[float], seconds_per_epoch: float = 1.0, domain: str = "D") -> dict:
    history = [
        {"epoch": i, "seconds": round((i + 1) * seconds_per_epoch, 3), "ndcg@10": v} for i, v in enumerate(ndcgs)
    ]
    return {
        "val_history": history,
        "mean_train_epoch_seconds": seconds_per_epoch * 0.9,
        "fit_seconds": len(ndcgs) * seconds_per_epoch,
        "target_only": {f"test/{domain}/ndcg@10": 0.05, f"test/{domain}/recall@10": 0.10},
    }


def _recbole(ndcgs: list[float], seconds_per_epoch: float = 10.0, stopped_early: bool = True) -> dict:
    history = [{"epoch": i, "seconds": (i + 1) * seconds_per_epoch, "ndcg@10": v} for i, v in enumerate(ndcgs)]
    best = max(reversed(history), key=lambda h: h["ndcg@10"])  # RecBole keeps the latest of equal scores
    return {
        "val_history": history,
        "train_epoch_seconds": [seconds_per_epoch * 0.8] * len(ndcgs),
        "best_val_ndcg@10": best["ndcg@10"],
        "best_epoch": best["epoch"],
        "seconds_to_best": best["seconds"],
        "test": {"ndcg@10": 0.04, "recall@10": 0.09},
        "epochs_run": len(ndcgs),
        "stopped_early": stopped_early,
    }


def test_vs_recbole_speedup_is_recbole_time_to_best_over_ours_time_to_reach_it():
    bench = _load_vs_recbole()
    # RecBole peaks at 0.05 in epoch 2 (30 s); ours first reaches 0.05 in epoch 1 (2 s) and peaks later.
    r = bench.compare(_ours([0.03, 0.05, 0.06, 0.055]), _recbole([0.02, 0.04, 0.05, 0.049]), "D", 2, 300)
    assert r["ours_seconds_to_recbole_best"] == 2.0 and r["ours_epoch_to_recbole_best"] == 1
    assert r["speedup_to_recbole_best"] == 15.0  # 30 s / 2 s
    assert r["ours"]["seconds_to_best"] == 3.0 and r["ours"]["best_val_ndcg@10"] == 0.06
    assert r["recbole"]["seconds_to_best"] == 30.0 and r["recbole"]["best_epoch"] == 2
    assert r["ours"]["seconds_per_train_epoch"] == 0.9 and r["recbole"]["seconds_per_train_epoch"] == 8.0
    assert r["train_epoch_speedup"] == round(8.0 / 0.9, 3)
    assert r["test_ndcg_ours_minus_recbole"] == 0.01
    assert r["ours"]["test_recall@10"] == 0.10 and r["recbole"]["test_recall@10"] == 0.09
    assert r["recbole_converged"] and r["caveat"] is None
    assert "15.0x" in bench.format_table({"D": r})


def test_vs_recbole_never_reaching_recbole_best_gives_no_speedup():
    bench = _load_vs_recbole()
    r = bench.compare(_ours([0.01, 0.02, 0.015, 0.012]), _recbole([0.02, 0.05, 0.04]), "D", 2, 300)
    assert r["ours_seconds_to_recbole_best"] is None and r["ours_epoch_to_recbole_best"] is None
    assert r["speedup_to_recbole_best"] is None
    assert "never reached" in r["caveat"]
    assert "—" in bench.format_table({"D": r})  # printable without numbers


def test_vs_recbole_across_seeds_averages_and_refuses_a_mean_with_a_missing_seed():
    bench = _load_vs_recbole()
    rb = _recbole([0.02, 0.04, 0.05, 0.049])
    fast, slow = _ours([0.03, 0.05, 0.06, 0.055]), _ours([0.03, 0.04, 0.05, 0.055])
    summary = bench.across_seeds({"0": bench.compare(fast, rb, "D", 2, 300), "1": bench.compare(slow, rb, "D", 2, 300)})
    one, two = (bench.compare(o, rb, "D", 2, 300)["speedup_to_recbole_best"] for o in (fast, slow))
    assert one > two
    assert summary["seeds"] == 2
    assert summary["speedup_to_recbole_best"] == {"mean": round((one + two) / 2, 5), "min": two, "max": one}
    never = bench.compare(_ours([0.01, 0.02, 0.015]), rb, "D", 2, 300)
    with_never = bench.across_seeds({"0": bench.compare(fast, rb, "D", 2, 300), "1": never})
    assert with_never["speedup_to_recbole_best"] is None


def test_vs_recbole_unconverged_recbole_best_is_a_lower_bound():
    bench = _load_vs_recbole()
    r = bench.compare(_ours([0.03, 0.05, 0.04, 0.04]), _recbole([0.02, 0.04], stopped_early=False), "D", 2, 300)
    assert r["recbole_converged"] is False
    assert "lower bound" in r["caveat"] and "had not finished" in r["caveat"]
    assert r["speedup_to_recbole_best"] == 10.0  # 20 s / 2 s, still reported, with the caveat
    assert r["ours_converged"]  # two validations without improvement after the best: our early stopping fired
    assert "epoch cap after 2 epochs" in r["caveat"]
    budget = {**_recbole([0.02, 0.04], stopped_early=False), "stopped": "time budget", "time_budget": 600.0}
    r = bench.compare(_ours([0.03, 0.05, 0.04, 0.04]), budget, "D", 2, 300)
    assert "time budget (600 s) after 2 epochs" in r["caveat"] and "lower bound" in r["caveat"]


def test_vs_recbole_our_run_at_its_epoch_cap_is_flagged():
    bench = _load_vs_recbole()
    r = bench.compare(_ours([0.03, 0.04, 0.05]), _recbole([0.02, 0.04]), "D", 10, 3)
    assert r["ours_converged"] is False and "Ours hit its epoch cap" in r["caveat"]
    assert r["recbole_converged"] and "lower bound" not in r["caveat"]


def test_vs_recbole_our_config_sets_patience_epochs_and_keeps_every_interaction(tmp_path):
    bench = _load_vs_recbole()
    cfg = yaml.safe_load(bench.our_config(7, 3, tmp_path / "c.yaml").read_text())
    assert cfg["trainer"]["max_epochs"] == 7
    stop = [cb for cb in cfg["trainer"]["callbacks"] if cb["class_path"].endswith("EarlyStopping")]
    assert [cb["init_args"]["patience"] for cb in stop] == [3]
    assert cfg["data"]["init_args"]["target"]["init_args"]["max_history"] is None
    assert bench.resolve_dataset("ml-100k") == ("movielens/ml-100k", "ml-100k")
    assert bench.resolve_dataset("amazon/Office") == ("amazon/Office", "Office")


def test_vs_recbole_reuses_an_earlier_recbole_run_only_if_measured_the_same_way(tmp_path):
    import argparse

    bench = _load_vs_recbole()
    earlier = {"command": "c", "git_commit": "g", "threads": 2, "settings": {"patience": 10},
               "raw": {"Scientific": {"recbole": _recbole([0.02, 0.04])}}}  # fmt: skip
    (tmp_path / "r.json").write_text(json.dumps(earlier))

    def args(**kw):
        base = {"recbole_from": str(tmp_path / "r.json"), "threads": 2, "patience": 10, "datasets": ["Scientific"]}
        return argparse.Namespace(**{**base, **kw})

    assert bench.reused(args().recbole_from, "recbole", args())["raw"]["Scientific"]["recbole"]["best_epoch"] == 1
    for bad in ({"threads": 1}, {"patience": 5}, {"datasets": ["ml-100k"]}):
        with pytest.raises(SystemExit):
            bench.reused(args().recbole_from, "recbole", args(**bad))
    with pytest.raises(SystemExit, match="no ours run"):  # the report holds RecBole's run only
        bench.reused(args().recbole_from, "ours", args())


def _run_main(bench, monkeypatch, *argv: str) -> dict:
    """The script's main() with ``argv``, nothing trained: our runs fail the test, RecBole's is a canned one."""
    monkeypatch.setattr("sys.argv", ["benchmark_vs_recbole.py", *argv])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # main() sets them for its subprocesses: restore after
        monkeypatch.setenv(var, "2")
    monkeypatch.setattr(bench.torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(bench, "run_ours", lambda *a, **k: pytest.fail("trained ours"))
    monkeypatch.setattr(bench, "ensure_recbole_venv", lambda *a: Path("python"))
    monkeypatch.setattr(bench, "run_recbole", lambda *a: _recbole([0.02, 0.03, 0.025], stopped_early=False))
    bench.main()
    return json.loads(Path(argv[argv.index("--output") + 1]).read_text())


def test_vs_recbole_without_seeds_runs_recbole_alone(tmp_path, monkeypatch):
    bench = _load_vs_recbole()
    report = _run_main(bench, monkeypatch, "--datasets", "ml-100k", "--seeds", "--output", str(tmp_path / "rb.json"))
    assert report["results"]["ml-100k"]["seeds"] == {} and report["settings"]["seeds_ours"] == []
    assert report["raw"]["ml-100k"]["recbole"]["best_val_ndcg@10"] == 0.03 and report["raw"]["ml-100k"]["ours"] == {}


def test_vs_recbole_compares_earlier_runs_of_ours_with_an_earlier_recbole_run(tmp_path, monkeypatch):
    bench = _load_vs_recbole()
    rb = _run_main(bench, monkeypatch, "--datasets", "ml-100k", "--seeds", "--output", str(tmp_path / "rb.json"))
    runs = {"0": _ours([0.02, 0.035], domain="ml-100k"), "1": _ours([0.01, 0.02, 0.04], 2.0, "ml-100k")}
    ours = {"command": "ours-cmd", "git_commit": "g2", "threads": 2, "raw": {"ml-100k": {"ours": runs}},
            "settings": {**rb["settings"], "model": "SASRec; ours with --x 1", "batch_size": {"ours": 64}}}  # fmt: skip
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    out = tmp_path / "both.json"
    report = _run_main(bench, monkeypatch, "--datasets", "ml-100k", "--recbole-from", str(tmp_path / "rb.json"),
                       "--ours-from", str(tmp_path / "ours.json"), "--output", str(out))  # fmt: skip
    seeds = report["results"]["ml-100k"]["seeds"]
    # RecBole's best, 0.03 after 20 s: seed 0 passes it after 2 s, seed 1 after 6 s
    assert {s: c["speedup_to_recbole_best"] for s, c in seeds.items()} == {"0": 10.0, "1": round(20 / 6, 3)}
    assert seeds["1"]["ours"]["seconds_per_train_epoch"] == 1.8  # kept in the raw runs, so still reported
    assert report["settings"]["seeds_ours"] == [0, 1] and report["settings"]["model"] == "SASRec; ours with --x 1"
    assert report["settings"]["ours_from"]["git_commit"] == "g2" and report["settings"]["batch_size"]["ours"] == 64
    assert report["raw"]["ml-100k"]["ours"]["1"]["mean_train_epoch_seconds"] == 1.8
    with pytest.raises(SystemExit):  # arguments for new runs of ours, with none to run
        _run_main(bench, monkeypatch, "--datasets", "ml-100k", "--ours-from", str(tmp_path / "ours.json"),
                  "--output", str(out), "--", "--model.dropout", "0.2")  # fmt: skip


def test_vs_recbole_both_sides_train_recboles_sasrec_sizes():
    from benchmarks.recbole_sasrec import BATCH_SIZE, SASREC, recbole_config

    bench = _load_vs_recbole()
    args = bench.our_args(Path("/data"), "movielens/ml-100k", 300)
    ours = {k: args[args.index(bench.sasrec_flag(k)) + 1] for k in SASREC}
    assert ours == {k: str(v) for k, v in SASREC.items()}
    rb = recbole_config("ml-100k", "/data", "/ckpt", 300, 10, 0)
    assert (rb["hidden_size"], rb["inner_size"], rb["n_layers"], rb["n_heads"], rb["MAX_ITEM_LIST_LENGTH"]) == (
        64, 256, 2, 2, 50)  # fmt: skip
    assert rb["hidden_dropout_prob"] == rb["attn_dropout_prob"] == 0.5 and rb["train_batch_size"] == BATCH_SIZE
    # The shipped SASRec config is that model too, so its runs compare with RecBole's without overrides.
    shipped = yaml.safe_load((REPO / "configs" / "scientific_sasrec.yaml").read_text())
    shipped = shipped["model"] | {
        "max_len": shipped["data"]["init_args"]["max_len"]
    }  # set by the data, read by the model
    assert {k: shipped[k] for k in SASREC} == SASREC


def test_vs_recbole_extra_arguments_come_last_so_they_win():
    bench = _load_vs_recbole()
    args = bench.our_args(Path("/data"), "movielens/ml-100k", 300, 64, ["--model.dropout", "0.2"])
    assert args[-2:] == ["--model.dropout", "0.2"] and args.index("--model.dropout") < len(args) - 2
    assert args[args.index("--data.init_args.target.init_args.batch_size") + 1] == "64"


def _with_test(run: dict, ndcg: float, recall: float) -> dict:
    if "target_only" in run:  # ours
        return {**run, "target_only": {"test/D/ndcg@10": ndcg, "test/D/recall@10": recall}}
    return {**run, "test": {"ndcg@10": ndcg, "recall@10": recall}}


def test_pool_pairs_every_run_of_ours_with_every_recbole_run_and_compares_means():
    from benchmarks.vs_recbole_report import format_pool, pool

    # RecBole "seed 0" peaks at 0.05 after 30 s (early stopping), "seed 1" at 0.04 after 20 s (its epoch cap).
    rb = {"seed 0": _with_test(_recbole([0.02, 0.04, 0.05, 0.049]), 0.05, 0.12),
          "seed 1": _with_test(_recbole([0.03, 0.04], stopped_early=False), 0.07, 0.10)}  # fmt: skip
    # Ours "0" reaches 0.04 after 1 s and 0.05 after 2 s; ours "1" reaches 0.04 after 4 s and never 0.05.
    ours = {"0": _with_test(_ours([0.04, 0.05, 0.06, 0.055]), 0.06, 0.13),
            "1": _with_test(_ours([0.03, 0.045, 0.044, 0.043], 2.0), 0.06, 0.11)}  # fmt: skip
    pooled = pool(ours, rb, "D", 2, {"0": 300, "1": 300})
    assert pooled["speedup_to_recbole_best"] == {
        "0": {"seed 0": 15.0, "seed 1": 20.0},
        "1": {"seed 0": None, "seed 1": 5.0},
    }
    assert pooled["speedup"] == {"min": 5.0, "max": 20.0, "pairs": 4, "pairs_at_goal": 2}
    assert pooled["goal"]["time_met"] is False  # one pairing never got there, one is 5x
    ndcg = pooled["test"]["test_ndcg@10"]
    assert ndcg["ours"]["mean"] == 0.06 and ndcg["recbole"]["mean"] == 0.06 and ndcg["ours_minus_recbole"] == 0.0
    assert ndcg["recbole"]["std"] == round(statistics.stdev([0.05, 0.07]), 5)
    assert pooled["goal"]["test_ndcg_met"]  # equal counts as met
    assert pooled["test"]["test_recall@10"]["ours_minus_recbole"] == round(0.12 - 0.11, 5)
    assert (
        pooled["recbole"]["seed 1"]["stopped"] == "epoch cap"
        and pooled["recbole"]["seed 0"]["stopped"] == "early stopping"
    )
    caveats = " ".join(pooled["caveats"])
    assert "seed 1 stopped on epoch cap" in caveats and "seed 0 stopped" not in caveats
    assert "Ours seed 1 never reached RecBole seed 0" in caveats
    table = format_pool(pooled)
    assert (
        "| ours seed 1: × sooner to it | never | 5.0 |" in table and "2 of 4 pairings" in table and "not met" in table
    )
    fast = pool({"0": ours["0"]}, rb, "D", 2, {"0": 300}, goal=15.0)
    assert fast["goal"]["time_met"] and fast["speedup"]["pairs_at_goal"] == 2


def test_pool_script_refuses_repeated_seeds_and_reports_measured_differently(tmp_path, monkeypatch):
    from benchmarks import pool_vs_recbole as script

    def report(name: str, seed: int, threads: int = 2, ours: dict | None = None) -> str:
        raw = {"D": {"recbole": _recbole([0.02, 0.04]), "ours": ours or {}}}
        body = {"command": name, "git_commit": "g", "threads": threads, "raw": raw,
                "settings": {"patience": 2, "seed": seed, "max_epochs": 300}}  # fmt: skip
        (tmp_path / name).write_text(json.dumps(body))
        return str(tmp_path / name)

    def run(*argv: str) -> None:
        monkeypatch.setattr("sys.argv", ["pool_vs_recbole.py", "--dataset", "D", *argv])
        script.main()

    rb0, rb1, rb0_again = report("rb0.json", 0), report("rb1.json", 1), report("rb0b.json", 0)
    ours = report("ours.json", 0, ours={"0": _ours([0.03, 0.05]), "1": _ours([0.05])})
    out = tmp_path / "pooled.json"
    run("--recbole", rb0, rb1, "--ours", ours, "--output", str(out))
    pooled = json.loads(out.read_text())
    assert set(pooled["results"]["speedup_to_recbole_best"]) == {"0", "1"}
    assert set(pooled["results"]["recbole"]) == {"seed 0", "seed 1"}
    # Reports outside the checkout are named without the folder of this machine.
    assert [i["report"] for i in pooled["inputs"]["recbole"]] == ["<abs>/rb0.json", "<abs>/rb1.json"] and pooled["when"]
    with pytest.raises(SystemExit, match="two RecBole runs with seed 0"):
        run("--recbole", rb0, rb0_again, "--ours", ours)
    with pytest.raises(SystemExit, match="two runs of ours with seed 0"):
        run("--recbole", rb0, "--ours", ours, ours)
    with pytest.raises(SystemExit, match="measured differently"):
        run("--recbole", rb0, report("rb2.json", 2, threads=1), "--ours", ours)
    with pytest.raises(SystemExit, match="no ours run"):
        run("--recbole", rb0, "--ours", rb1)
    rerun = report("ours3.json", 0, ours={"1": _ours([0.02, 0.05])})  # seed 1 again, measured later
    run("--recbole", rb0, "--ours", f"{ours}:0", rerun, "--output", str(out))
    pooled = json.loads(out.read_text())
    assert pooled["results"]["speedup_to_recbole_best"] == {"0": {"seed 0": 10.0}, "1": {"seed 0": 10.0}}
    assert [i["report"] for i in pooled["inputs"]["ours"]] == ["<abs>/ours.json:0", "<abs>/ours3.json"]
    with pytest.raises(SystemExit, match="no ours runs with seeds 7"):
        run("--recbole", rb0, "--ours", f"{ours}:7")

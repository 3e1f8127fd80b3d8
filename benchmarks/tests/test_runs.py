"""The benchmark runs: one config per seed, reuse of finished runs, the figures over seeds, the recorded command."""

import json
from pathlib import Path

import pytest
import yaml

from benchmarks.runs import prepare_config, summarize

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_prepared_runs_never_share_checkpoints_or_logs(config, tmp_path):
    # Parallel seeds writing into one checkpoint folder would test each other's "best" checkpoints.
    seen = set()
    for run in ("a-seed0", "a-seed1"):
        cfg = yaml.safe_load(prepare_config(config, run, tmp_path).read_text())
        dirpaths = [cb["init_args"]["dirpath"] for cb in cfg["trainer"]["callbacks"] if "dirpath" in cb["init_args"]]
        assert dirpaths and all(run in d for d in dirpaths)
        assert cfg["trainer"]["logger"]["init_args"]["name"].endswith(run)
        assert cfg["results_json"].endswith(f"{run}.json")
        seen.update(dirpaths)
    assert len(seen) == 2


def test_runs_of_two_targets_log_to_folders_named_by_target(tmp_path):
    # The same variant and seed on Scientific and on Office were version_0 and version_1 of one folder.
    cases = {"scientific_transfer": "Scientific", "office_transfer": "Office", "scientific_target_only": "Scientific",
             "quickstart": "posters"}  # fmt: skip
    for config, target in cases.items():
        cfg = yaml.safe_load(prepare_config(REPO / "configs" / f"{config}.yaml", "a-seed0", tmp_path).read_text())
        assert cfg["trainer"]["logger"]["init_args"]["name"] == f"bench/{target}/a-seed0", config


def test_only_finished_runs_of_the_same_config_seed_args_and_commit_are_reused(tmp_path, monkeypatch):
    from benchmarks import runs
    from benchmarks.runs import git_commit, run_seed

    commit = git_commit()
    monkeypatch.setattr(runs, "git_commit", lambda: commit)
    started = []  # stands in for ``rec-transfer fit``: records the start and fails
    monkeypatch.setattr(runs, "run_logged", lambda cmd, log, cwd=None: started.append(cmd) or 1)

    config = tmp_path / "c.yaml"
    config.write_text("model: {mode: id}\n")
    key = {"commit": commit, "config": config.read_text(), "seed": 0, "args": ["--x", "1"]}
    finished = {"target_only": {"test/x/ndcg@10": 0.5}, "wall_seconds": 12.0, "run_key": key}
    (tmp_path / "a-seed0.json").write_text(json.dumps(finished))
    # Reused: read back without starting a run.
    assert run_seed(config, 0, "a-seed0", ["--x", "1"], tmp_path, reuse=True) == finished
    assert not started

    def starts_a_run(**changes):  # not reused: it starts ``rec-transfer fit`` (which "fails" here)
        args = {"config": config, "seed": 0, "run_name": "a-seed0", "extra_args": ["--x", "1"], "reuse": True}
        with pytest.raises(RuntimeError, match="failed"):
            run_seed(out_dir=tmp_path, **(args | changes))

    starts_a_run(seed=1)
    starts_a_run(extra_args=["--x", "2"])
    starts_a_run(reuse=False)
    (tmp_path / "a-seed0.json").write_text(json.dumps(finished | {"run_key": key | {"commit": "other"}}))
    with pytest.raises(RuntimeError, match="failed"):
        run_seed(config, 0, "a-seed0", ["--x", "1"], tmp_path, reuse=True)
    assert len(started) == 4


def test_an_interrupted_run_of_the_same_config_seed_args_and_commit_is_resumed(tmp_path, monkeypatch):
    from benchmarks import runs
    from benchmarks.runs import git_commit, run_seed

    commit = git_commit()
    monkeypatch.setattr(runs, "git_commit", lambda: commit)
    config = tmp_path / "c.yaml"
    config.write_text("model: {mode: id}\n")
    commands = []

    def fit(cmd, log, cwd=None):  # stands in for ``rec-transfer fit``: is killed once, then finishes
        commands.append(cmd)
        (tmp_path / "checkpoints" / "a-seed0").mkdir(parents=True, exist_ok=True)
        (tmp_path / "checkpoints" / "a-seed0" / "last.ckpt").write_text("weights")
        log.write(f"attempt {len(commands)}\n")
        if len(commands) == 1:
            return -9
        (tmp_path / "a-seed0.json").write_text(json.dumps({"target_only": {"test/x/ndcg@10": 0.5}}))
        return 0

    monkeypatch.setattr(runs, "run_logged", fit)
    with pytest.raises(RuntimeError, match="failed"):
        run_seed(config, 0, "a-seed0", [], tmp_path, reuse=True)
    assert "--ckpt_path" not in commands[0]
    results = run_seed(config, 0, "a-seed0", [], tmp_path, reuse=True)
    assert commands[1][-2:] == ["--ckpt_path", str(tmp_path / "checkpoints" / "a-seed0" / "last.ckpt")]
    assert results["resumed"] and (tmp_path / "a-seed0.log").read_text().startswith("attempt 1\n--- resumed")
    # Checkpoints of another config's run are not resumed from: removed, and the run starts over.
    config.write_text("model: {mode: text}\n")
    (tmp_path / "a-seed0.json").unlink()
    commands.clear()
    with pytest.raises(RuntimeError, match="failed"):
        run_seed(config, 0, "a-seed0", [], tmp_path, reuse=True)
    assert "--ckpt_path" not in commands[0]


def test_best_validation_is_the_first_best_epoch():
    from benchmarks.stats import best_validation

    history = [{"epoch": 0, "ndcg@10": 0.1}, {"epoch": 1, "ndcg@10": 0.3}, {"epoch": 2, "ndcg@10": 0.3}]
    assert best_validation(history) == (1, history[1])
    assert best_validation([]) is None


def test_spread_over_runs():
    from benchmarks.stats import spread

    assert spread([1.0, 3.0, 2.0]) == {"n": 3, "mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0}
    assert spread([0.123456]) == {"n": 1, "mean": 0.12346, "std": 0.0, "min": 0.123456, "max": 0.123456}


def test_reports_record_the_command_without_paths_of_this_machine():
    from benchmarks.runs import ROOT, command_line

    runner = str(ROOT / "benchmarks" / "transfer.py")
    argv = [runner, "--data-root", "/data/x", "--work-dir", str(ROOT / "runs"), "--output", "/elsewhere/out.json",
            "--", "--data.init_args.data_root=/data/x", "--model.lr", "0.1"]  # fmt: skip
    assert command_line(argv) == (
        "python -m benchmarks.transfer --data-root '<data_root>' --work-dir runs --output '<abs>/out.json' "
        "-- '--data.init_args.data_root=<data_root>' --model.lr 0.1"
    )


def test_summarize_mean_and_sample_std():
    out = summarize([{"test/x": 1.0, "other": 5}, {"test/x": 3.0}], "test/")
    assert out == {"test/x": {"mean": 2.0, "std": 1.41421, "values": [1.0, 3.0]}}


def test_a_seed_reports_the_best_epoch_its_fit_tested():
    from benchmarks.runs import seed_result

    # Two validations equal at 5 decimals: the fit's own best (the checkpoint it tested) names the epoch.
    history = [{"epoch": 0, "seconds": 1.0, "ndcg@10": 0.0628}, {"epoch": 1, "seconds": 2.0, "ndcg@10": 0.0628}]
    timing = {"fit_seconds": 3.0, "epochs": 2, "mean_train_epoch_seconds": 1.0, "wall_seconds": 4.0}
    r = timing | {"val_history": history, "target_only": {"test/x/ndcg@10": 0.06}, "git_commit": "abc"}
    row = seed_result(2, r | {"best_validation": {"epoch": 1, "ndcg@10": 0.0628}}, ("transfer", "target_only"))
    assert row == {"seed": 2, **timing, "git_commit": "abc", "best_val_ndcg@10": 0.0628, "best_epoch": 1,
                   "test/x/ndcg@10": 0.06}  # fmt: skip
    assert seed_result(2, r, ("target_only",))["best_epoch"] == 0  # an older results JSON: the first best epoch


def test_git_commit_of_a_copied_tree_is_the_one_named_in_the_environment(monkeypatch):
    from benchmarks import runs

    def no_git(cmd, **kw):
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(runs.subprocess, "run", no_git)
    monkeypatch.delenv("REC_TRANSFER_GIT_COMMIT", raising=False)
    assert runs.git_commit() == "unknown"
    monkeypatch.setenv("REC_TRANSFER_GIT_COMMIT", "abc123")  # named: git is not asked (a copy may carry stale .git)
    monkeypatch.setattr(runs.subprocess, "run", lambda cmd, **kw: pytest.fail("git was asked"))
    assert runs.git_commit() == "abc123"


def test_a_benchmark_killed_with_sigterm_stops_its_fits(tmp_path):
    # A fit left running after its benchmark is killed would go on writing the checkpoints a rerun resumes from; a
    # queued seed started after the kill would too.
    import os
    import signal
    import subprocess
    import sys
    import time

    def sleeper(n: int) -> str:
        return f"import os, time; open({str(tmp_path / f'{n}.pid')!r}, 'w').write(str(os.getpid())); time.sleep(60)"

    code = (
        "import sys\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from benchmarks.runs import run_logged, stop_fits_on_sigterm\n"
        "stop_fits_on_sigterm()\n"
        "with ThreadPoolExecutor(max_workers=1) as pool:\n"  # as bench_configs runs seeds
        f"    for cmd in ({sleeper(0)!r}, {sleeper(1)!r}):\n"
        f"        pool.submit(run_logged, [sys.executable, '-c', cmd], open({str(tmp_path / 'log')!r}, 'a'))\n"
    )
    bench = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    first = tmp_path / "0.pid"
    deadline = time.monotonic() + 30
    while not (first.exists() and first.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=30) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):  # reaped by the benchmark: gone, not a zombie
        os.kill(int(first.read_text()), 0)
    assert not (tmp_path / "1.pid").exists()  # the queued fit never started


def test_after_a_sigterm_no_fit_starts(tmp_path, monkeypatch):
    # The pool's queued seeds call run_logged after the handler ran: each must refuse rather than start a fit.
    import sys
    import threading

    from benchmarks import runs

    stopping = threading.Event()
    stopping.set()  # as stop_fits_on_sigterm's handler leaves it
    monkeypatch.setattr(runs, "_STOPPING", stopping)
    started = tmp_path / "started"
    with open(tmp_path / "log", "w") as log, pytest.raises(RuntimeError, match="stopping"):
        runs.run_logged([sys.executable, "-c", f"open({str(started)!r}, 'w')"], log)
    assert not started.exists() and not runs._CHILDREN

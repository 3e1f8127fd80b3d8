"""Run folders through the command line: a version folder per fit, ``--ckpt_path last|best`` in every subcommand, and
a resumed fit that ends as an uninterrupted one would, the target-only baseline and ``results.json`` included."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import TARGET, Lines, cli, cli_output, run_dir, tiny_quickstart

from rec_transfer.runs import best_of
from rec_transfer.utils.checkpoints import NoCheckpoint


def results_of(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def versions(root: Path, name: str = "quickstart") -> list[str]:
    return sorted(p.name for p in (root / "logs" / name).iterdir())


# ---------------------------------------------------------------- finding a run's checkpoints
@pytest.mark.parametrize("subcommand", ["fit", "test", "predict"])
def test_last_or_best_without_an_earlier_run_fails_saying_where_it_looked(tmp_path: Path, subcommand: str) -> None:
    config = tiny_quickstart(tmp_path)
    for which in ("last", "best"):
        with pytest.raises(NoCheckpoint, match=rf"--ckpt_path {which}: no run of this config.*: no last.ckpt in "
                           r".*logs/quickstart/version_\*/checkpoints .*Fit this config first"):  # fmt: skip
            cli(tmp_path, subcommand, "--config", config, "--ckpt_path", which)
    assert not (tmp_path / "logs").exists()  # nothing was trained or written


def test_best_is_the_checkpoint_fit_tested(run) -> None:
    assert best_of(run.dir / "checkpoints" / "last.ckpt") == run.best
    tested = results_of(run.dir)["transfer"]
    c = cli(run.root, "test", "--config", run.config, "--ckpt_path", "best")
    assert c.config.test.ckpt_path == str(run.best)
    metrics = c.trainer.callback_metrics
    for key, value in tested.items():
        assert float(metrics[key]) == pytest.approx(value, abs=1e-5), key
    # Testing a run's checkpoint logs into that run's folder: no new version folder, no stale config written over.
    assert versions(run.root) == ["version_0"]


def test_predict_with_best_and_a_chosen_k(run, tmp_path: Path) -> None:
    out = tmp_path / "recs.jsonl"
    writer = {"class_path": "rec_transfer.callbacks.RecommendationWriter", "init_args": {"output": str(out)}}
    c = cli(
        run.root, "predict", "--config", run.config, "--ckpt_path", "best", f"--trainer.callbacks+={json.dumps(writer)}"
    )
    assert c.config.predict.ckpt_path == str(run.best)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == c.datamodule.target.domain.num_users
    assert {len(r["items"]) for r in rows} == {c.model.hparams.top_k}
    assert versions(run.root) == ["version_0"]


def test_every_fit_gets_its_own_version_folder_named_after_its_config(tmp_path: Path) -> None:
    config = tiny_quickstart(tmp_path)
    args = ("--trainer.max_epochs", "1", "--compare_target_only", "false")
    for _ in range(2):
        cli(tmp_path, "fit", "--config", config, *args)
    assert versions(tmp_path) == ["version_0", "version_1"]
    for version in (0, 1):
        folder = run_dir(tmp_path, version)
        assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "results.json").is_file()
        assert results_of(folder)["run"]["log_dir"] == str(folder)
    assert not list(tmp_path.rglob("*-v1.ckpt"))  # no last-v1.ckpt piling up in one folder
    # A copied config writes under its own name, not the one it was copied from.
    copy = tmp_path / "my_copy.yaml"
    copy.write_text(config.read_text())
    cli(tmp_path, "fit", "--config", copy, *args)
    assert versions(tmp_path, "my_copy") == ["version_0"] and versions(tmp_path) == ["version_0", "version_1"]
    # --ckpt_path last resumes the newest run, in its own folder.
    c = cli(tmp_path, "fit", "--config", config, "--ckpt_path", "last", "--trainer.max_epochs", "2", *args[2:])
    assert c.config.fit.ckpt_path == str(run_dir(tmp_path, 1) / "checkpoints" / "last.ckpt")
    assert c.trainer.log_dir == str(run_dir(tmp_path, 1)) and versions(tmp_path) == ["version_0", "version_1"]


def test_default_root_dir_holds_the_runs_as_in_lightning(tmp_path: Path) -> None:
    config = tiny_quickstart(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    del cfg["trainer"]["logger"]  # the CLI's default logger: lightning_logs/<config name>/version_N
    config.write_text(yaml.safe_dump(cfg))
    args = ("--config", config, "--trainer.max_epochs", "1", "--compare_target_only", "false")
    root = tmp_path / "elsewhere"
    c = cli(tmp_path, "fit", *args, "--trainer.default_root_dir", root)
    folder = root / "lightning_logs" / "quickstart" / "version_0"
    assert c.trainer.log_dir == str(folder) and (folder / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "lightning_logs").exists()
    resumed = cli(tmp_path, "fit", *args, "--trainer.default_root_dir", root, "--ckpt_path", "last")
    assert resumed.config.fit.ckpt_path == str(folder / "checkpoints" / "last.ckpt")


# ---------------------------------------------------------------- resume: the baseline and results.json
def test_resuming_a_finished_run_reads_the_baseline_back(run, tmp_path: Path) -> None:
    first = cli_output(tmp_path, "fit", "--config", tiny_quickstart(tmp_path))
    folder = run_dir(tmp_path)
    before = results_of(folder)
    baseline_events = sorted((folder / "target_only").glob("events.out.tfevents.*"))
    again = cli_output(tmp_path, "fit", "--config", tiny_quickstart(tmp_path), "--ckpt_path", "last")
    after = results_of(folder)
    # Not retrained: no new event file of the baseline, its result as it was, the rest merged in.
    assert sorted((folder / "target_only").glob("events.out.tfevents.*")) == baseline_events
    assert after["target_only"] == before["target_only"] and after["target_only_run"] == before["target_only_run"]
    assert after["transfer"] == before["transfer"] and after["zero_shot"] == before["zero_shot"]
    assert any("read back" in line for line in again.log)
    assert "target only" in again.stdout and again.stdout.split("── result")[1] == first.stdout.split("── result")[1]
    assert versions(tmp_path) == ["version_0"]
    # The same seed gives the same numbers as the session's run (another folder, another order of runs).
    assert before["target_only"] == results_of(run.dir)["target_only"]
    assert before["transfer"] == results_of(run.dir)["transfer"]


def test_resuming_with_more_epochs_extends_the_baseline_too(tmp_path: Path) -> None:
    config = tiny_quickstart(tmp_path)  # max_epochs 2
    cli(tmp_path, "fit", "--config", config)
    folder = run_dir(tmp_path)
    assert results_of(folder)["target_only_run"]["epochs"] == 2
    again = cli_output(tmp_path, "fit", "--config", config, "--ckpt_path", "last", "--trainer.max_epochs", "3")
    after = results_of(folder)
    assert after["epochs"] == 3 and after["target_only_run"]["epochs"] == 3  # both runs trained one more epoch
    assert not any("read back" in line for line in again.log)
    assert any("resumed from its last checkpoint" in line for line in again.log)
    assert versions(tmp_path) == ["version_0"]


def test_a_transfer_config_without_sources_trains_on_the_target_alone(tmp_path: Path) -> None:
    out = cli_output(tmp_path, "fit", "--config", tiny_quickstart(tmp_path), "--data.init_args.sources", "[]")
    results = results_of(run_dir(tmp_path))
    assert "target_only" in results and "transfer" not in results and not results.get("zero_shot")
    assert results["epochs"] == 2 and not (run_dir(tmp_path) / "handover.ckpt").exists()
    assert any("no source domains: the fit trains on the target alone" in line for line in out.log)
    assert f"{TARGET} (no source domains)" in out.stdout


def test_a_baseline_killed_midway_resumes_to_the_uninterrupted_numbers(run, tmp_path: Path) -> None:
    config = tiny_quickstart(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    marker = tmp_path / "crash-once"
    marker.touch()
    cfg["trainer"]["callbacks"].append(
        {"class_path": "cli_helpers.CrashTargetOnly", "init_args": {"marker": str(marker)}}
    )
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli(tmp_path, "fit", "--config", config)
    folder = run_dir(tmp_path)
    written = results_of(folder)  # the transfer's results are written before the baseline starts
    assert "transfer" in written and "target_only" not in written
    last = torch.load(folder / "target_only" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 0  # the baseline had finished one epoch

    cli(tmp_path, "fit", "--config", config, "--ckpt_path", "last")
    resumed = results_of(folder)
    uninterrupted = results_of(run.dir)
    assert resumed["target_only"] == uninterrupted["target_only"]
    assert resumed["transfer"] == uninterrupted["transfer"] == written["transfer"]
    assert resumed["val_history"] == written["val_history"]  # merged: the transfer's own record is kept
    assert resumed["target_only"][f"test/{TARGET}/ndcg@10"] > 0


@pytest.mark.parametrize("epoch", [0, 1])
def test_ctrl_c_in_a_fit_says_whether_and_how_it_resumes(epoch: int, tmp_path: Path, monkeypatch) -> None:
    config = tiny_quickstart(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["callbacks"].append({"class_path": "cli_helpers.CtrlC", "init_args": {"epoch": epoch}})
    config.write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # Lightning ignores further Ctrl-C: not in pytest
    lines, logger = Lines(), logging.getLogger("rec_transfer")
    logger.addHandler(lines)
    try:
        with pytest.raises(SystemExit) as exc:
            cli(tmp_path, "fit", "--config", config)
    finally:
        logger.removeHandler(lines)
    assert exc.value.code == 1  # Lightning's status after its graceful shutdown
    said = [m for m in lines.lines if m.startswith("interrupted")]
    last = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    if epoch == 0:
        assert said == ["interrupted in epoch 0, before the first checkpoint: nothing to resume, a new fit starts over "
                        "(preprocessed domains and text vectors stay cached)"]  # fmt: skip
    else:
        assert said == [f"interrupted in epoch 1: the same command with --ckpt_path last resumes from the end of the "
                        f"last finished epoch ({last})"]  # fmt: skip


def test_fits_started_together_claim_separate_version_folders_and_a_failed_one_leaves_none(tmp_path: Path) -> None:
    from jsonargparse import Namespace

    from rec_transfer.runs import RESERVED, release_unused_versions, reserve_version

    def fit_config(name: str = "c") -> Namespace:
        logger = Namespace(class_path="TensorBoardLogger", init_args=Namespace(save_dir=str(tmp_path), name=name))
        return Namespace(trainer=Namespace(logger=logger), ckpt_path=None)

    first, second = fit_config(), fit_config()
    reserve_version(first)
    reserve_version(second)  # as a second process would, before the first has written anything
    assert (first.trainer.logger.init_args.version, second.trainer.logger.init_args.version) == (0, 1)
    (tmp_path / "c" / "version_0" / "results.json").write_text("{}")
    release_unused_versions()  # both stopped: the one that wrote nothing leaves no folder
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["version_0"] and not RESERVED
    resumed = fit_config()
    resumed.ckpt_path = "last"
    reserve_version(resumed)  # a resumed fit continues its own folder
    assert resumed.trainer.logger.init_args.get("version") is None
    reserve_version(fit_config("new"))
    release_unused_versions()  # a config's first fit that failed before writing leaves not even its name's folder
    assert not (tmp_path / "new").exists() and (tmp_path / "c").is_dir()

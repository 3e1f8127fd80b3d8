"""What a fit tells its user: the printed summary, a line per epoch without a terminal, the switch and early stopping
as they happen, and TensorBoard's learning rate, phase marker and hparams tab."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cli_helpers import SOURCES, TARGET, fit_run, read_scalars
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from rec_transfer.callbacks import TargetEarlyStopping
from rec_transfer.metrics import paired_comparison
from rec_transfer.runs import read_user_scores
from rec_transfer.summary import format_summary


def test_fit_prints_a_summary_of_its_results(run) -> None:
    results = json.loads((run.dir / "results.json").read_text())
    summary = run.stdout.split("── result: ", 1)[1]
    assert summary.startswith(f"{TARGET} ← {', '.join(SOURCES)}")
    rows = {line[:14].strip(): line[14:].split() for line in summary.splitlines()[1:5]}
    assert rows["test split"] == ["NDCG@10", "Recall@10", "NDCG@50", "Recall@50", "MRR"]
    columns = ["ndcg@10", "recall@10", "ndcg@50", "recall@50", "mrr"]
    for label, source, prefix in [
        ("zero-shot", results["zero_shot"], f"zeroshot_test/{TARGET}/"),
        ("transfer", results["transfer"], f"test/{TARGET}/"),
        ("target only", results["target_only"], f"test/{TARGET}/"),
    ]:
        assert rows[label] == [f"{source[prefix + c]:.4f}" for c in columns], label
    gain = results["transfer"][f"test/{TARGET}/ndcg@10"] - results["target_only"][f"test/{TARGET}/ndcg@10"]
    # The gap user by user: the same users' scores from both fits, written beside each one's logs.
    transfer, alone = (read_user_scores(folder) for folder in (run.dir, run.dir / "target_only"))
    assert results["comparison"] == {"a": "transfer", "b": "target_only", "split": "test",
                                     **paired_comparison(transfer, alone)}  # fmt: skip
    assert results["comparison"]["ndcg@10"]["difference"] == pytest.approx(gain, abs=1e-4)
    assert transfer["ndcg@10"].mean().item() == pytest.approx(results["transfer"][f"test/{TARGET}/ndcg@10"], abs=1e-5)
    assert f"transfer − target only on the same {len(transfer['user'])} test users" in summary
    for metric, label in (("ndcg@10", "NDCG@10"), ("recall@10", "Recall@10")):
        gap = results["comparison"][metric]
        assert f"  {label:<10}{gap['difference']:+.4f} ± {gap['standard_error']:.4f}  z {gap['z']:+.1f}  " in summary
    best = results["best_validation"]
    assert f"best validation NDCG@10 {best['ndcg@10']:.4f} at epoch {best['epoch']}" in summary
    for path in (run.dir / "results.json", run.best, run.dir, run.dir / "handover.ckpt"):
        assert str(path) in summary
    assert format_summary(results) == "── result: " + summary.strip()  # the same summary from results.json alone


@pytest.mark.parametrize(
    ("z", "verdict"), [(0.8, "level: within what the draw"), (-1.9, "level: within"), (2.4, "transfer ahead"),
                       (-2.1, "target only ahead"), (0.0, "level")]
)  # fmt: skip
def test_the_summary_says_when_the_gap_is_within_the_draw_of_test_users(z: float, verdict: str) -> None:
    key = "test/t/ndcg@10"
    gap = {"difference": 0.01 if z else 0.0, "standard_error": 0.01 / abs(z) if z else 0.01, "z": z}
    results = {
        "target": "t", "sources": ["s"], "transfer": {key: 0.31}, "target_only": {key: 0.30},
        "comparison": {"users": 400, "ndcg@10": gap},
    }  # fmt: skip
    summary = format_summary(results)
    assert "the same 400 test users" in summary and "too few" not in summary
    line = next(line for line in summary.splitlines() if line.startswith("  NDCG@10"))
    assert f"z {z:+.1f}  {verdict}" in line
    assert "no standard error" in format_summary({**results, "comparison": None})
    few = format_summary({**results, "comparison": {"users": 3, "ndcg@10": gap}})
    assert "only 3 test users: too few for these standard errors to mean much" in few


def test_a_gap_without_spread_or_with_one_test_user_is_not_called_level() -> None:
    key = "test/t/ndcg@10"
    results = {"target": "t", "sources": ["s"], "transfer": {key: 1.0}, "target_only": {key: 0.0}}
    every = {"difference": 1.0, "standard_error": 0.0, "z": 0.0}  # paired_difference of all ones against all zeros
    summary = format_summary({**results, "comparison": {"users": 40, "ndcg@10": every}})
    assert "transfer ahead by as much on every test user" in summary and "level" not in summary
    one = format_summary({**results, "comparison": {"users": 1, "ndcg@10": every}})
    assert "on the same 1 test user (" in one and "one test user: no standard error, no verdict" in one
    assert "level" not in one and "too few" not in one


def test_the_summary_says_when_validation_was_still_improving_at_the_last_epoch() -> None:
    results = {"target": "t", "sources": [], "target_only": {"test/t/ndcg@10": 0.3}, "epochs": 12}
    improving = format_summary({**results, "best_validation": {"epoch": 11, "ndcg@10": 0.3}})
    assert "at epoch 11 (of 12 epochs; still improving at the last: more epochs may score higher)" in improving
    assert "still improving" not in format_summary({**results, "best_validation": {"epoch": 9, "ndcg@10": 0.3}})


def test_one_test_user_compares_without_a_crash() -> None:
    one = {"user": torch.tensor(0), "ndcg@10": torch.tensor(1.0), "recall@10": torch.tensor(1.0)}  # as compute() gives
    comparison = paired_comparison(one, one)
    assert comparison["users"] == 1 and comparison["ndcg@10"]["difference"] == 0.0


def test_a_fit_that_ends_before_the_switch_says_so_and_claims_no_transfer(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="rec_transfer"):
        short = fit_run(tmp_path, "--trainer.max_epochs", "1")  # source_epochs 1: never on the target
    assert "max_epochs 1 <= source_epochs 1: unless the sources' validation stalls sooner" in caplog.text
    # Its baseline's one epoch is shorter than its weight average (about 10 steps of 2 a epoch): said too.
    assert "the average spans about 5 epochs, more than the 1 left before max_epochs" in caplog.text
    results = json.loads((short.dir / "results.json").read_text())
    assert results["switch_epoch"] is None and "target_only" in results
    summary = format_summary(results)
    assert "\nsources only " in summary and "the fit ended before the switch to the target" in summary
    assert not any(line.startswith("transfer") for line in summary.splitlines()) and "ahead" not in summary
    switched = format_summary({**results, "switch_epoch": 1})  # the same results, switched: the verdict is back
    assert "\ntransfer " in switched and "transfer − target only on the same" in switched


def test_without_a_terminal_each_epoch_is_a_line_and_the_switch_is_announced(run) -> None:
    log = run.log
    assert any(line.startswith(f"training {TARGET} ← books, toys: ") and str(run.dir) in line for line in log)
    epochs = [line for line in log if line.startswith("epoch ") and " loss " in line]
    assert epochs[0].startswith("epoch 0/1 source: loss ") and f"val NDCG@10 {TARGET} " in epochs[0]
    assert all(f"{s} " in epochs[0] for s in SOURCES) and epochs[0].endswith(" s")
    assert epochs[1].startswith("epoch 1/1 target: loss ") and "(best " in epochs[1]
    assert epochs[2].startswith("epoch 0/1: loss ")  # the target-only baseline: no phases
    switch = log.index(f"epoch 1: switched from the sources to the target {TARGET} (new optimizer and scheduler)")
    zero_shot = next(i for i, line in enumerate(log) if line.startswith(f"zero-shot on {TARGET}"))
    assert log.index(epochs[0]) < zero_shot < switch < log.index(epochs[1])
    assert "validation NDCG@10 " in log[zero_shot] and "; test NDCG@10 " in log[zero_shot]  # not a dict of floats


def test_early_stopping_says_when_and_why(caplog) -> None:
    stop = TargetEarlyStopping(monitor="hp/val_ndcg@10", mode="max", patience=2)
    trainer = SimpleNamespace(
        fast_dev_run=False, should_stop=False, is_global_zero=True, current_epoch=0, callback_metrics={},
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision),
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="rec_transfer"):
        for epoch, value in enumerate([0.3, 0.5, 0.4, 0.45, 0.2]):
            trainer.current_epoch, trainer.callback_metrics = epoch, {"hp/val_ndcg@10": torch.tensor(value)}
            stop._run_early_stopping_check(trainer)
            if trainer.should_stop:
                break
    assert trainer.should_stop and stop.stopped_epoch == 3
    messages = [r.getMessage() for r in caplog.records if "stopping early" in r.getMessage()]
    assert messages == ["epoch 3: stopping early, hp/val_ndcg@10 has not improved for 2 validations (best 0.5000)"]


def hparams_of(folder) -> tuple[list[str], dict]:
    """The metric names and the session's hyper-parameters written to ``folder``'s HPARAMS tab."""
    metrics, params = [], {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        try:
            contents = acc.PluginTagToContent("hparams").values()
        except KeyError:  # an event file without hparams (e.g. the test's)
            continue
        for content in contents:
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("experiment"):
                metrics += [m.name.tag for m in data.experiment.metric_infos]
            if data.HasField("session_start_info"):
                for key, value in data.session_start_info.hparams.items():
                    params[key] = value.string_value or value.number_value or value.bool_value
    return metrics, params


def test_tensorboard_aligns_transfer_and_baseline_by_epochs_on_the_target(run) -> None:
    results = json.loads((run.dir / "results.json").read_text())
    transfer = read_scalars(run.dir)["target_epochs/val_ndcg@10"]
    baseline = read_scalars(run.dir / "target_only")["target_epochs/val_ndcg@10"]
    # One source epoch, then one on the target: the zero-shot point at 0, the fine-tuned one at 1; the baseline's
    # two epochs at 1 and 2, so both curves share one axis.
    assert [step for step, _ in transfer] == [0, 1] and [step for step, _ in baseline] == [1, 2]
    assert transfer[0][1] == pytest.approx(results["zero_shot"][f"zeroshot/{TARGET}/ndcg@10"], abs=1e-6)
    assert transfer[1][1] == pytest.approx(results["val_history"][-1]["ndcg@10"], abs=1e-4)


def test_tensorboard_logs_learning_rate_phase_and_run_settings(run) -> None:
    scalars = read_scalars(run.dir)
    assert scalars["lr-AdamW"] and all(v > 0 for _, v in scalars["lr-AdamW"])
    assert [v for _, v in scalars["transfer/phase"]] == [0.0, 1.0]  # epoch 0 on the sources, epoch 1 on the target
    # The hparams tab's metric is the best validation so far (its last value is the best, not the last), and nothing
    # was written before a value was measured.
    val = [v for step, v in scalars["hp/val_ndcg@10"] if step > 0]  # the fit's (a later `validate` logs at step 0)
    val = val[1:]  # after the switch (one source epoch): the best is the best fine-tuned model, as the checkpoint's
    best = [v for _, v in scalars["hp/best_val_ndcg@10"]]
    assert best == pytest.approx([max(val[: i + 1]) for i in range(len(val))])
    assert all(step > 0 for step, _ in scalars["hp/best_val_ndcg@10"])
    tested = json.loads((run.dir / "results.json").read_text())["transfer"]["hp/test_ndcg@10"]
    assert {round(v, 5) for _, v in scalars["hp/test_ndcg@10"]} == {tested}  # also after `test` reran it
    metrics, params = hparams_of(run.dir)
    assert metrics == ["hp/best_val_ndcg@10", "hp/test_ndcg@10"]
    assert params["data/sources"] == "books, toys" and params["data/target"] == TARGET
    assert params["transfer/source_epochs"] == 1 and params["data/batch_size"] == 32 and params["seed"] == "0"
    assert params["model/hidden_size"] == 16 and params["data/max_len"] == 10
    assert params["transfer/handover"] == "last" and params["transfer/anchor"] == 0.0 == params["transfer/reinit"]
    assert params["transfer/joint"] is False
    # The target-only baseline's row says so.
    _, alone = hparams_of(run.dir / "target_only")
    assert alone["data/sources"] == "none" and alone["transfer/source_epochs"] == 0


def test_the_best_checkpoint_is_a_fine_tuned_one_even_where_the_sources_validate_higher(tmp_path: Path) -> None:
    spoilt = fit_run(tmp_path, "--model.target_lr", "3.0", "--compare_target_only", "false")  # ruins the target phase
    val = [v for step, v in read_scalars(spoilt.dir)["hp/val_ndcg@10"] if step > 0]
    assert len(val) == 2 and val[0] > val[1]  # epoch 0 (sources) above epoch 1 (target): what this test needs
    results = json.loads((spoilt.dir / "results.json").read_text())
    assert spoilt.best.name.startswith("epoch=1-") and results["best_validation"]["epoch"] == 1


def test_the_run_folder_keeps_the_handed_over_model_and_mixing_it_in_spans_tested_to_zero_shot(run) -> None:
    from benchmarks.interpolate import mixes
    from benchmarks.trained import trained_model
    from rec_transfer.utils.checkpoints import load_checkpoint

    results = json.loads((run.dir / "results.json").read_text())
    model, data, _ = trained_model(run.config, run.best)
    handover = load_checkpoint(run.dir / "handover.ckpt")["state_dict"]
    tested, handed_over = mixes(model, data, handover, [0.0, 1.0])
    for row, expected in ((tested, results["transfer"]), (handed_over, results["zero_shot"])):
        prefix = "test" if row is tested else "zeroshot_test"
        for kind in ("weights_test", "scores_test"):
            assert row[kind]["ndcg@10"] == pytest.approx(expected[f"{prefix}/{TARGET}/ndcg@10"], abs=1e-5)
            assert row[kind]["recall@10"] == pytest.approx(expected[f"{prefix}/{TARGET}/recall@10"], abs=1e-5)

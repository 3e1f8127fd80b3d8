"""The command line: every config instantiates without data; fit / validate / test / predict on tiny SYNTHETIC domains.

The end-to-end run (the ``run`` fixture of ``conftest.py``) is ``configs/quickstart.yaml`` shrunk (tiny domains, 2
epochs, 1 on the sources) with every output (checkpoints, TensorBoard logs, results JSON, caches) in a temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from cli_helpers import (
    REPO,
    SOURCES,
    TARGET,
    callback,
    cli,
    cli_output,
    read_scalars,
    run_dir,
    shop_with_new_items,
    tiny_quickstart,
)

from rec_transfer.baseline import TARGET_LR_DEFAULT
from rec_transfer.callbacks import DomainTransfer
from rec_transfer.cli import build_cli, main, target_only_config
from rec_transfer.data import DomainDataModule, TransferDataModule
from rec_transfer.data.domain import Domain
from rec_transfer.metrics import pessimistic_rank
from rec_transfer.models.components import ItemScorer
from rec_transfer.models.recommender import TransferRecommender
from rec_transfer.text import TextEncoderConfig
from rec_transfer.user_errors import ConfigError
from rec_transfer.utils.checkpoints import NoCheckpoint, load_checkpoint

CONFIGS = sorted(REPO.glob("configs/*.yaml"))


# ---------------------------------------------------------------- every config, no data
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_instantiates_without_reading_data(config: Path, tmp_path: Path, monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("instantiating a config must not read data")

    for owner, name in [
        (Domain, "load"),
        (DomainDataModule, "prepare_data"),
        (DomainDataModule, "setup"),
        (DomainDataModule, "_read_raw"),
        (TextEncoderConfig, "item_vectors"),
    ]:
        monkeypatch.setattr(owner, name, forbidden)
    monkeypatch.chdir(tmp_path)  # relative data paths (``../shared/data``) now point at nothing

    parsed = yaml.safe_load(config.read_text())
    c = build_cli(["--config", str(config)], run=False)

    assert isinstance(c.model, TransferRecommender)
    for key, value in parsed.get("model", {}).items():
        assert c.model.hparams[key] == value, key
    assert isinstance(c.datamodule, TransferDataModule)
    domains = list(c.datamodule.domains.values())
    assert domains and all(isinstance(d, DomainDataModule) and d.domain is None for d in domains)
    if c.model.hparams.mode != "id":
        assert all(isinstance(d.text_encoder, TextEncoderConfig) for d in domains)
    # The transfer swaps loaders between epochs and shards batches itself.
    assert c.trainer.reload_dataloaders_every_n_epochs == 1
    assert not c.trainer._accelerator_connector.use_distributed_sampler
    wanted = [cb["class_path"].rsplit(".", 1)[1] for cb in parsed["trainer"].get("callbacks", [])]
    have = {type(cb).__name__ for cb in c.trainer.callbacks}
    assert set(wanted) <= have
    assert list(tmp_path.iterdir()) == []  # nothing written either


def test_a_setting_a_class_refuses_is_one_line_naming_the_config(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing lands in the repository
    monkeypatch.setattr(sys, "argv", ["rec-transfer"])  # not pytest's arguments
    config = tmp_path / "bad.yaml"
    text = (REPO / "configs/quickstart.yaml").read_text()
    config.write_text(text.replace("init_args: {source_epochs: 6}", "init_args: {source_epochs: 6, reinit: 2.0}"))
    with pytest.raises(ConfigError, match=r"bad\.yaml: DomainTransfer reinit must be between 0 .* got 2\.0$"):
        build_cli(["--config", str(config)], run=False)
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"rec-transfer: error: {config}: DomainTransfer reinit must be between")
        and "Traceback" not in err
    )


def test_a_config_that_is_not_yaml_is_one_line_naming_file_and_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["rec-transfer"])
    config = tmp_path / "typo.yaml"
    config.write_text("model:\n  hidden_size: 64\n   dropout: 0.2\n")  # one space too many
    for args in (["--config", str(config)], ["-c", str(config)], [f"--config={config}"]):
        with pytest.raises(SystemExit) as exc:
            main(["fit", *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err == f"rec-transfer: error: {config}:3:11: not valid YAML: mapping values are not allowed here\n"


def test_a_missing_data_folder_is_one_line_naming_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["rec-transfer"])
    config = tmp_path / "missing.yaml"
    target = '{path: "synthetic:posters", synthetic: {num_users: 200, num_items: 150, mean_length: 6}, batch_size: 64}'
    text = (REPO / "configs/quickstart.yaml").read_text()
    assert target in text
    config.write_text(text.replace(target, f'{{path: "{tmp_path / "Office"}", batch_size: 64}}'))
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1]
        == f"rec-transfer: error: {tmp_path / 'Office'}: expected a folder holding a domain's files; it does not exist"
    )


def one_error_line(root: Path, capsys, *args: str) -> str:
    """What ``main`` printed for ``args`` run in ``root``: exit status 2 and one ``rec-transfer: error:`` line."""
    with contextlib.chdir(root), mock.patch.object(sys, "argv", ["rec-transfer"]), pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rec-transfer: error: ") and "Traceback" not in "\n".join(err), err
    return err[-1].removeprefix("rec-transfer: error: ")


def test_checkpoint_and_model_name_mistakes_are_one_line_each(run, tmp_path: Path, capsys) -> None:
    config = tiny_quickstart(tmp_path)  # the same config, logging to a folder where it never ran
    for subcommand, which in (("test", "best"), ("predict", "last")):
        err = one_error_line(tmp_path, capsys, subcommand, "--config", config, "--ckpt_path", which)
        assert err.startswith(f"--ckpt_path {which}: no run of this config") and "Fit this config first" in err
    err = one_error_line(tmp_path, capsys, "predict", "--config", config)
    assert err.startswith("predict needs trained weights: pass --ckpt_path")
    err = one_error_line(tmp_path, capsys, "test", "--config", config, "--ckpt_path", "nope.ckpt")
    assert err == "--ckpt_path nope.ckpt: no such checkpoint file"
    err = one_error_line(tmp_path, capsys, "test", "--config", config, "--ckpt_path", config)
    assert err == f"checkpoint {config}: is truncated or not a checkpoint (no torch.save zip archive)"
    hidden = load_checkpoint(run.best)["hyper_parameters"]["hidden_size"]
    err = one_error_line(run.root, capsys, "test", "--config", run.config, "--ckpt_path", run.best,
                         "--model.hidden_size", hidden * 2)  # fmt: skip
    assert err.startswith(f"checkpoint {run.best}: its weights were trained with other model settings (hidden_size: "
                          f"checkpoint {hidden}, given {hidden * 2})")  # fmt: skip
    err = one_error_line(tmp_path, capsys, "fit", "--config", config, "--model.pretrained", "nope.ckpt")
    assert err == "model.pretrained: checkpoint 'nope.ckpt' does not exist"
    err = one_error_line(tmp_path, capsys, "fit", "--config", config, "--model.pretrained", config)
    assert err.startswith(f"checkpoint {config}: is truncated or not a checkpoint")
    err = one_error_line(tmp_path, capsys, "fit", "--config", config, "--model.mode", "id",
                         "--data.init_args.target.init_args.catalogue", "all")  # fmt: skip
    assert err.startswith("synthetic:posters: catalogue: all ranks items without interactions by their text, which")


def test_a_folder_the_run_cannot_write_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    def refused(config) -> None:
        raise PermissionError(13, "Permission denied", "lightning_logs/quickstart")

    monkeypatch.setattr("rec_transfer.cli.reserve_version", refused)
    with contextlib.chdir(tmp_path), mock.patch.object(sys, "argv", ["rec-transfer"]), pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(tiny_quickstart(tmp_path))])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "rec-transfer: error: Permission denied: lightning_logs/quickstart"


def test_ctrl_c_while_the_libraries_load_is_one_line() -> None:
    # The console script's first seconds import Lightning; Ctrl-C lands there as KeyboardInterrupt in an import.
    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'lightning':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from rec_transfer.entry import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code, "fit"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "rec-transfer: interrupted\n")


def test_print_config_shows_the_run_name_and_folder(tmp_path: Path, capsys) -> None:
    config = REPO / "configs" / "quickstart.yaml"  # its logger keeps the default name and save_dir
    with mock.patch.object(sys, "argv", ["rec-transfer"]), pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path), "--print_config"])
    assert exc.value.code == 0
    logger = yaml.safe_load(capsys.readouterr().out)["trainer"]["logger"]["init_args"]
    assert (logger["name"], logger["save_dir"]) == ("quickstart", str(tmp_path / "lightning_logs"))


# ---------------------------------------------------------------- one tiny fit through the CLI
def test_fit_writes_checkpoint_logs_and_results(run) -> None:
    # Everything of a run in its version folder, named after the config file.
    last = run.dir / "checkpoints" / "last.ckpt"
    assert last.is_file() and run.best.is_file() and run.best.parent == last.parent
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == run.cli.trainer.current_epoch - 1  # the latest epoch, not the best one
    assert any(k.startswith("DomainTransfer") for k in state["callbacks"]) and state["state_dict"]

    scalars = read_scalars(run.dir)
    assert (run.dir / "config.yaml").is_file()
    wanted = {"train/loss", f"val/{TARGET}/ndcg@10", f"zeroshot/{TARGET}/ndcg@10", f"test/{TARGET}/ndcg@10"}
    wanted |= {f"val/{s}/ndcg@10" for s in SOURCES} | {f"train/{s}/loss" for s in (*SOURCES, TARGET)}
    assert wanted <= scalars.keys(), wanted - scalars.keys()
    # Sources first, then the zero-shot evaluation, then the target.
    last_source_step = max(step for s in SOURCES for step, _ in scalars[f"train/{s}/loss"])
    ((zero_shot_step, _),) = scalars[f"zeroshot/{TARGET}/ndcg@10"]
    assert last_source_step < zero_shot_step <= min(step for step, _ in scalars[f"train/{TARGET}/loss"])

    results = json.loads((run.dir / "results.json").read_text())
    assert {"transfer", "target_only"} <= results.keys()  # quickstart compares with training on the target alone
    assert 0 < results["zero_shot"][f"zeroshot/{TARGET}/ndcg@10"] <= 1  # the zero-shot point is in the results too
    assert 0 < results["zero_shot"][f"zeroshot_test/{TARGET}/ndcg@10"] <= 1  # on the test split as well
    # One target validation per epoch, in time order, for time-to-quality reports.
    history = results["val_history"]
    assert [h["epoch"] for h in history] == list(range(run.cli.trainer.current_epoch))
    assert all(a["seconds"] < b["seconds"] for a, b in zip(history, history[1:], strict=False))
    # The checkpoints choose among the target phase's validations (after tiny_quickstart's one source epoch).
    best = max(history[1:], key=lambda h: h["ndcg@10"])
    assert best["ndcg@10"] == pytest.approx(float(run.ckpt.best_model_score), abs=1e-5)
    assert results["best_validation"]["ndcg@10"] == best["ndcg@10"]
    assert run.best.name.startswith(f"epoch={results['best_validation']['epoch']}-")  # the epoch of the tested file
    assert results["run"] == {
        "log_dir": str(run.dir), "best_checkpoint": str(run.best), "last_checkpoint": str(last),
        "results_json": str(run.dir / "results.json"), "handover": str(run.dir / "handover.ckpt"),
    }  # fmt: skip
    assert (run.dir / "target_only" / "checkpoints" / "last.ckpt").is_file()
    for name in ("transfer", "target_only"):
        test = results[name]
        assert 0 <= test[f"test/{TARGET}/recall@10"] <= test[f"test/{TARGET}/recall@50"] <= 1
        assert 0 < test[f"test/{TARGET}/ndcg@10"] <= 1 and test["hp/test_ndcg@10"] == test[f"test/{TARGET}/ndcg@10"]


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_validate_and_test_reproduce_fit_metrics(run, subcommand: str) -> None:
    c = cli(run.root, subcommand, "--config", run.config, "--ckpt_path", run.best)
    metrics = {k: float(v) for k, v in c.trainer.callback_metrics.items()}
    if subcommand == "validate":
        # The checkpoint was chosen by this very number during fit.
        assert metrics[f"val/{TARGET}/ndcg@10"] == pytest.approx(float(run.ckpt.best_model_score), abs=1e-6)
    else:
        results = json.loads((run.dir / "results.json").read_text())["transfer"]
        for key, value in results.items():
            assert metrics[key] == pytest.approx(value, abs=1e-5), key


def test_the_handed_over_weights_test_to_the_zero_shot_row(run, tmp_path: Path, capsys) -> None:
    handover, zero_shot = run.dir / "handover.ckpt", json.loads((run.dir / "results.json").read_text())["zero_shot"]
    args = ("--config", run.config, "--data.init_args.sources", "[]", "--trainer.logger", "false")
    c = cli(tmp_path, "test", *args, "--model.pretrained", handover)
    for metric in ("ndcg@10", "recall@10"):
        tested = float(c.trainer.callback_metrics[f"test/{TARGET}/{metric}"])
        assert tested == pytest.approx(zero_shot[f"zeroshot_test/{TARGET}/{metric}"], abs=1e-5)
    err = one_error_line(tmp_path, capsys, "test", *args, "--ckpt_path", handover)  # weights, not a run to resume
    assert (
        err == f"checkpoint {handover}: holds model weights without a run's state (as handover.ckpt): give it as "
        "--model.pretrained"
    )


def test_transfer_checkpoint_tests_on_a_target_only_config(run, tmp_path: Path) -> None:
    # What a user does to evaluate source-trained weights on a target: a config without sources.
    config = yaml.safe_load(run.config.read_text())  # as the README's config: the averaging added by default
    config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"] if "Averaging" not in c["class_path"]]
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = cli(run.root, "test", "--config", tmp_path / "quickstart.yaml", "--data.init_args.sources", "[]",
                "--ckpt_path", run.best)  # fmt: skip
    assert not c.datamodule.sources
    # The transfer's callback states do not matter to a test: Lightning's "please add the callbacks" is not shown.
    assert not [w for w in caught if "callbacks used to create the checkpoint" in str(w.message)]
    results = json.loads((run.dir / "results.json").read_text())["transfer"]
    metrics = c.trainer.callback_metrics
    assert float(metrics[f"test/{TARGET}/ndcg@10"]) == pytest.approx(results[f"test/{TARGET}/ndcg@10"], abs=1e-5)


def test_test_and_predict_read_the_target_only(run, tmp_path: Path) -> None:
    # The sources are where the fit read them no more (another machine): test and predict never look.
    gone = json.dumps([{"path": str(tmp_path / name)} for name in SOURCES])
    c = cli(run.root, "test", "--config", run.config, "--data.init_args.sources", gone, "--ckpt_path", run.best)
    results = json.loads((run.dir / "results.json").read_text())["transfer"]
    metrics = c.trainer.callback_metrics
    assert float(metrics[f"test/{TARGET}/ndcg@10"]) == pytest.approx(results[f"test/{TARGET}/ndcg@10"], abs=1e-5)
    assert all(m.domain is None for m in c.datamodule.sources)
    cli(run.root, "predict", "--config", run.config, "--data.init_args.sources", gone, "--ckpt_path", run.best,
        add_writer(tmp_path / "recs.jsonl"))  # fmt: skip
    assert len(read_jsonl(tmp_path / "recs.jsonl")) == c.datamodule.target.domain.num_users


def add_writer(output: Path) -> str:
    writer = {"class_path": "rec_transfer.callbacks.RecommendationWriter", "init_args": {"output": str(output)}}
    return f"--trainer.callbacks+={json.dumps(writer)}"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def full_scores(model: TransferRecommender, dm: DomainDataModule) -> tuple[list[int], torch.Tensor]:
    """Every user's scores over the whole catalogue, as the checkpoint's model computes them."""
    users, scores = [], []
    model.eval()
    with torch.no_grad():
        for batch in dm.predict_dataloader():
            users += batch["user"].tolist()
            scores.append(model(batch))
    return users, torch.cat(scores)


def check_recommendations(rows: list[dict], dm: DomainDataModule, top_k: int) -> None:
    domain = dm.domain
    assert [r["user_id"] for r in rows] == domain.sequences["user_id"]  # one line per user, in order
    catalogue = dict(zip(domain.items["item_id"], domain.items["text"], strict=True))
    for row in rows:
        assert row["domain"] == dm.name and len(row["items"]) == top_k
        ids = [item["item_id"] for item in row["items"]]
        assert len(set(ids)) == top_k and all(catalogue[item["item_id"]] == item["text"] for item in row["items"])
        scores = [item["score"] for item in row["items"]]
        assert all(math.isfinite(s) for s in scores) and scores == sorted(scores, reverse=True)


def test_predict_ranks_new_items_by_their_text_and_writes_to_the_run_folder(run, tmp_path: Path) -> None:
    # A shop whose item file lists two new items nobody has bought yet; every user already has 4 of the 6 old ones.
    shop = shop_with_new_items(tmp_path / "shop")
    target = json.dumps({"path": str(shop), "catalogue": "all", "cache_dir": str(tmp_path / "cache")})
    out = cli_output(tmp_path, "predict", "--config", run.config, "--data.init_args.sources", "[]",
                     "--data.init_args.target", target, "--model.pretrained", run.best, "--model.top_k", 4,
                     "--trainer.logger.init_args.save_dir", tmp_path / "logs")  # fmt: skip
    written = tmp_path / "logs" / "quickstart" / "version_0" / "recommendations.jsonl"
    assert f"wrote the recommendations of 8 users to {written}" in out.log
    assert [p.name for p in written.parent.iterdir()] == [written.name]  # no empty TensorBoard events file
    rows = read_jsonl(written)
    assert len(rows) == 8
    # Without their history each user has two old items left and the two new ones, ranked by their text.
    assert all({"n0", "n1"} <= {item["item_id"] for item in row["items"]} for row in rows)


def test_predict_recommends_for_users_too_short_to_train_on(run, tmp_path: Path) -> None:
    shop = shop_with_new_items(tmp_path / "shop")  # 8 users with 4 interactions each
    with (shop / "shop.inter").open("a") as f:  # and three with too few to train or test on; n0 is in no history
        f.write("\ns1\ti2\t0\ns2\ti0\t0\ns2\ti1\t1\ns3\tn0\t0")
    target = json.dumps({"path": str(shop), "cache_dir": str(tmp_path / "cache")})
    out = cli_output(tmp_path, "predict", "--config", run.config, "--data.init_args.sources", "[]",
                     "--data.init_args.target", target, "--model.pretrained", run.best, "--model.top_k", 3,
                     "--trainer.logger", "false", add_writer(tmp_path / "recs.jsonl"))  # fmt: skip
    assert (
        "shop: 3 users with fewer than 3 interactions (4 interactions) left out of training and evaluation; predict "
        "recommends for them too" in out.log
    )
    rows = read_jsonl(tmp_path / "recs.jsonl")
    assert [r["user_id"] for r in rows] == [f"u{u}" for u in range(8)] + ["s1", "s2", "s3"]
    short = {r["user_id"]: {item["item_id"] for item in r["items"]} for r in rows[8:]}
    assert all(len(items) == 3 for items in short.values())
    assert "i2" not in short["s1"] and not {"i0", "i1"} & short["s2"]  # without their histories' items
    assert not {"n0", "n1"} & set().union(*short.values())  # not in the catalogue: never recommended


def test_python_recommends_what_predict_writes(run, tmp_path: Path) -> None:
    from rec_transfer.serving import Recommender

    out = tmp_path / "recs.jsonl"
    c = cli(run.root, "predict", "--config", run.config, "--ckpt_path", run.best, add_writer(out))
    rows, domain = read_jsonl(out), c.datamodule.target.domain
    offsets, values = domain.flat()
    ids = domain.items["item_id"]
    rec = Recommender.from_run(run.dir)
    for user in (0, 7):
        history = [ids[i - 1] for i in values[offsets[user] : offsets[user + 1]]]
        got, written = rec.recommend(history, k=c.model.hparams.top_k), rows[user]["items"]
        assert [g["score"] for g in got] == pytest.approx([w["score"] for w in written], abs=1e-4)
        assert {g["item_id"] for g in got} == {w["item_id"] for w in written}
        assert all(g["text"] == dict(zip(ids, domain.items["text"], strict=True))[g["item_id"]] for g in got)
        assert len({g["item_id"] for g in rec.recommend(history, k=len(ids), exclude_history=False)}) == len(ids)
    assert len(rec.recommend([], k=3)) == 3  # a user without a history yet
    with pytest.raises(KeyError, match=r"not among the \d+ items of 'posters': \['nope'\]"):
        rec.recommend(["nope"])
    with pytest.raises(TypeError, match="history is a list of item ids"):
        rec.recommend(ids[0])
    assert Recommender.from_run(run.best).recommend(history, k=3) == got[:3]  # a checkpoint file of the run too
    with pytest.raises(NoCheckpoint, match="no last.ckpt in its checkpoints/"):
        Recommender.from_run(tmp_path)


def test_predict_writes_top_k_per_target_user(run, tmp_path: Path) -> None:
    out = tmp_path / "recs.jsonl"
    c = cli(run.root, "predict", "--config", run.config, "--ckpt_path", run.best, add_writer(out))
    dm, model = c.datamodule.target, c.model
    top_k = model.hparams.top_k
    rows = read_jsonl(out)
    check_recommendations(rows, dm, top_k)

    # The file is the top-K of the checkpoint's full ranking, without the items already in the user's history.
    users, scores = full_scores(model, dm)
    assert users == list(range(dm.domain.num_users))
    item_ids = dm.domain.items["item_id"]
    offsets, values = dm.domain.flat()
    for user, row, user_scores in zip(users, rows, scores, strict=True):
        history = values[offsets[user] : offsets[user + 1]]
        best = user_scores.index_fill(0, torch.from_numpy(history.astype("int64")), float("-inf")).topk(top_k)
        # The same scores as the top-K (items whose scores tie within float error may swap places), each the item's.
        assert [item["score"] for item in row["items"]] == pytest.approx(best.values.tolist(), abs=1e-4)
        index = {item_id: i for i, item_id in enumerate(item_ids, start=1)}
        listed = torch.tensor([index[item["item_id"]] for item in row["items"]])
        assert [item["score"] for item in row["items"]] == pytest.approx(user_scores[listed].tolist(), abs=1e-4)
        assert len(set(listed.tolist())) == top_k
        assert not {item["item_id"] for item in row["items"]} & {item_ids[i - 1] for i in history}
    # With the history kept, it is the plain top-K, and here some of it is history.
    model.hparams.exclude_history = False
    with torch.no_grad():
        found = [model.recommend(batch, top_k) for batch in dm.predict_dataloader()]
    kept_scores, kept = torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found])
    plain = scores.topk(top_k).indices
    # The plain top-K, up to items whose scores tie within float error (swapped places).
    torch.testing.assert_close(kept_scores, scores.topk(top_k).values, atol=1e-4, rtol=0)
    torch.testing.assert_close(scores.gather(1, kept), kept_scores, atol=1e-4, rtol=0)
    assert (kept == plain).float().mean() > 0.95
    assert any(set(p.tolist()) & set(values[offsets[u] : offsets[u + 1]].tolist()) for u, p in enumerate(plain))

    # Items that occur in no training sequence (only as held-out items) are scored through their text like any other.
    offsets, values = dm.domain.flat()
    trained = {int(i) for u in range(len(offsets) - 1) for i in values[offsets[u] : offsets[u + 1] - 2]}
    unseen = sorted(set(range(1, dm.num_items + 1)) - trained)
    assert unseen, "the tiny target should hold items outside every training sequence"
    assert torch.isfinite(scores[:, 1:]).all() and torch.isneginf(scores[:, 0]).all()
    assert scores[:, unseen].std() > 0  # real, item-specific scores, not a constant fallback
    recommended = {item["item_id"] for row in rows for item in row["items"]}
    assert recommended & {item_ids[i - 1] for i in unseen}


def test_predict_on_a_domain_never_trained_on(run, tmp_path: Path) -> None:
    """Text items transfer zero-shot: the checkpoint ranks a catalogue whose items it has never seen."""
    out = tmp_path / "apparel.jsonl"
    c = cli(
        run.root, "predict", "--config", run.config, "--ckpt_path", run.best,
        "--data.init_args.target.init_args.path", "synthetic:apparel", add_writer(out),
    )  # fmt: skip
    dm = c.datamodule.target
    assert dm.name == "apparel" and "apparel" not in run.cli.model.item_tower.num_items
    rows = read_jsonl(out)
    check_recommendations(rows, dm, c.model.hparams.top_k)
    assert all(item["item_id"].startswith("apparel") for row in rows for item in row["items"])


# ---------------------------------------------------------------- bf16 autocast
def test_scores_stay_float32_under_bf16_autocast() -> None:
    scorer = ItemScorer(similarity="dot", temperature=1)
    table = torch.zeros(4, 4)
    table[1:, 0] = torch.tensor([1.000, 1.002, 1.004])  # all round to 1.0 in bf16 (spacing 2**-7 near 1)
    states = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = scorer(states, table)
    assert logits.dtype == torch.float32
    assert pessimistic_rank(logits, torch.tensor([3])).item() == 1  # no bf16 ties counted against the target


def test_bf16_mixed_fit_through_cli(tmp_path: Path) -> None:
    config = tiny_quickstart(tmp_path, tmp_path / "ckpt")
    c = cli(
        tmp_path, "fit", "--config", config, "--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "1",
        "--compare_target_only", "false",
    )  # fmt: skip
    assert c.trainer.precision == "bf16-mixed" and (tmp_path / "ckpt" / "last.ckpt").is_file()
    results = json.loads((run_dir(tmp_path) / "results.json").read_text())["transfer"]
    assert all(math.isfinite(v) for v in results.values())


# ---------------------------------------------------------------- the target-only version of a transfer config
def test_target_only_config_drops_sources_and_the_switch_and_renames_outputs() -> None:
    transfer = yaml.safe_load((REPO / "configs" / "scientific_transfer.yaml").read_text())
    # Fixed output places, as a user may write them (the shipped configs leave them to the run's version folder).
    transfer["trainer"]["callbacks"].append(
        {"class_path": "rec_transfer.callbacks.LatestCheckpoint", "init_args": {"dirpath": "checkpoints/sci"}}
    )
    transfer["trainer"]["logger"] = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                     "init_args": {"name": "sci"}}  # fmt: skip
    transfer["results_json"] = "out/results.json"
    before = json.dumps(transfer)
    alone = target_only_config(transfer)
    assert json.dumps(transfer) == before  # the transfer config is left as it was
    assert "sources" not in alone["data"]["init_args"] and "target_lr" not in alone["model"]
    assert alone["data"]["init_args"]["target"] == transfer["data"]["init_args"]["target"]
    # The target trains at the same learning rate in both runs: transfer's after the switch.
    assert alone["model"]["lr"] == transfer["model"]["target_lr"] != transfer["model"]["lr"]
    assert alone["model"]["lr_scale"] == transfer["model"]["target_lr_scale"] == {"item_tower.adaptor": 2.0}
    assert {k: v for k, v in transfer["model"].items() if k not in ("target_lr", "lr", "target_lr_scale")} == {
        k: v for k, v in alone["model"].items() if k not in ("lr", "lr_scale")
    }
    kept = [cb for cb in transfer["trainer"]["callbacks"] if not cb["class_path"].endswith("DomainTransfer")]
    assert [cb["class_path"] for cb in alone["trainer"]["callbacks"]] == [cb["class_path"] for cb in kept]
    assert callback(alone, "LatestCheckpoint")["init_args"]["dirpath"] == "checkpoints/sci-target_only"
    assert alone["trainer"]["logger"]["init_args"]["name"] == "sci-target_only"
    assert alone["results_json"] == "out/results-target_only.json"
    assert alone["trainer"]["max_epochs"] == transfer["trainer"]["max_epochs"]
    del transfer["model"]["target_lr"]  # left out: the model's default
    assert target_only_config(transfer)["model"]["lr"] == TARGET_LR_DEFAULT
    transfer["model"]["target_lr"] = None  # the target at lr
    assert target_only_config(transfer)["model"]["lr"] == transfer["model"]["lr"]
    # The target's scales and warm-up too, under a run's names (the source phase's own scales are not the target's).
    transfer["model"] |= {"lr_scale": {"encoder": 2.0}, "target_lr_scale": {"item_tower.adaptor": 0.5},
                          "warmup_steps": 10, "target_warmup_steps": 100}  # fmt: skip
    model = target_only_config(transfer)["model"]
    assert model["lr_scale"] == {"item_tower.adaptor": 0.5} and model["warmup_steps"] == 100
    assert not {"target_lr_scale", "target_warmup_steps"} & model.keys()
    del transfer["model"]["target_lr_scale"], transfer["model"]["target_warmup_steps"]
    model = target_only_config(transfer)["model"]  # left out: the model's default, the recipe's scales
    assert model["lr_scale"] == {"item_tower.adaptor": 2.0} and model["warmup_steps"] == 10
    assert target_only_config(transfer | {"model": {"mode": "id"}})["model"]["lr_scale"] == {}  # no adaptor
    transfer["model"]["target_lr_scale"] = {}  # every part at the target rate
    assert target_only_config(transfer)["model"]["lr_scale"] == {}


def test_target_only_config_averages_where_its_transfer_run_does() -> None:
    transfer = yaml.safe_load((REPO / "configs" / "scientific_transfer.yaml").read_text())
    named = [cb for cb in transfer["trainer"]["callbacks"] if cb["class_path"].endswith("TargetWeightAveraging")]
    assert callback(target_only_config(transfer), "TargetWeightAveraging") == named[0]  # named: kept as it is
    transfer["trainer"]["callbacks"].remove(named[0])  # none named: the transfer fit gets the default one
    default = {"class_path": "rec_transfer.callbacks.TargetWeightAveraging"}
    assert callback(target_only_config(transfer), "TargetWeightAveraging") == default
    del transfer["data"]["init_args"]["sources"]  # no sources, so no default averaging to match
    assert not [cb for cb in target_only_config(transfer)["trainer"]["callbacks"]
                if cb["class_path"].endswith("TargetWeightAveraging")]  # fmt: skip


def test_shipped_text_target_only_config_is_the_transfer_configs_target_only_version() -> None:
    # configs/scientific_target_only.yaml is for users; the baseline itself is defined once, by target_only_config.
    derived = target_only_config(yaml.safe_load((REPO / "configs" / "scientific_transfer.yaml").read_text()))
    shipped = yaml.safe_load((REPO / "configs" / "scientific_target_only.yaml").read_text())
    assert shipped["model"] == derived["model"] and shipped["data"] == derived["data"]
    assert shipped["seed_everything"] == derived["seed_everything"]

    def settings(config: dict) -> list[tuple[str, dict]]:  # what the callbacks do, not where they write
        return [(cb["class_path"], {k: v for k, v in cb["init_args"].items() if k != "dirpath"})
                for cb in config["trainer"]["callbacks"]]  # fmt: skip

    assert settings(shipped) == settings(derived)


def test_compare_target_only_trains_on_the_target_alone(run) -> None:
    # The baseline of the quickstart's comparison: no source batches, no switch, no zero-shot point.
    scalars = read_scalars(run.dir / "target_only")  # inside the transfer run's folder
    assert f"train/{TARGET}/loss" in scalars and f"val/{TARGET}/ndcg@10" in scalars
    assert not [tag for tag in scalars if any(f"/{s}/" in tag for s in SOURCES) or tag.startswith("zeroshot")]
    # It trains at transfer's learning rate after the switch (the model's hyperparameters: what it trains with).
    transfer, alone = (yaml.safe_load((d / "hparams.yaml").read_text()) for d in (run.dir, run.dir / "target_only"))
    assert alone["lr"] == transfer["target_lr"] != transfer["lr"]


def test_every_shipped_transfer_config_is_one_recipe() -> None:
    # One default recipe for every target: the configs differ only in which domains they read and in the loss
    # (a sampled softmax where the catalogue is large).
    def recipe(name: str) -> dict:
        cfg = yaml.safe_load((REPO / "configs" / name).read_text())
        data = cfg["data"]["init_args"]
        domains = [data["target"], *data["sources"]]
        settings = [{k: v for k, v in d["init_args"].items() if k != "path"} for d in domains]
        assert settings[1:] == [settings[1]] * (len(settings) - 1)  # every source alike
        cfg["model"].pop("loss", None)
        return {"model": cfg["model"], "trainer": cfg["trainer"], "target": settings[0], "source": settings[1]}

    names = sorted(p.name for p in (REPO / "configs").glob("*_transfer.yaml"))
    assert len(names) >= 3
    first = recipe(names[0])
    assert all(recipe(n) == first for n in names[1:])
    assert first["target"]["text_encoder"]["center"] and first["source"]["text_encoder"]["center"]
    (transfer,) = [cb for cb in first["trainer"]["callbacks"] if cb["class_path"].endswith("DomainTransfer")]
    assert transfer["init_args"]["freeze"] == DomainTransfer().freeze == []


def test_the_saved_config_is_dumped_without_a_deprecation_warning(run, monkeypatch) -> None:
    # Lightning's SaveConfigCallback still passes jsonargparse's old "skip_none": a warning in every fit's output.
    monkeypatch.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "all")  # else shown once per process, maybe already
    parser = run.cli._parser("fit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dumped = parser.dump(run.cli.config["fit"], skip_none=False)
    assert not [w for w in caught if "skip_none" in str(w.message)]
    assert "ckpt_path: null" in dumped  # None values kept, as skip_none=False asks

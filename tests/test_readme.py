"""The README's "your own data" recipe, as a new user follows it: its config, run on generated RecBole folders, gives a
transfer run with a printed result, and nothing on the way but our own lines (no library bars, tips or warnings)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import yaml
from cli_helpers import REPO, cli_output

from rec_transfer.data.synthetic import synthetic_domain, write_recbole

README = (REPO / "README.md").read_text()


def readme_config() -> str:
    """The YAML block of the README's "Your own data" section."""
    section = README.split("## Your own data", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def test_readme_is_short_and_says_first_what_the_tool_does_and_whether_transfer_helps() -> None:
    assert len(README) <= 12_000
    first_screen = README[:2500]
    assert "transfer" in first_screen and "## Does transfer help?" in first_screen and "| target |" in first_screen


def test_the_readme_config_runs_on_recbole_folders(tmp_path: Path, capfd) -> None:
    text = readme_config()
    assert len(text.splitlines()) <= 25
    config = yaml.safe_load(text)
    domains = [config["data"]["init_args"]["target"], *config["data"]["init_args"]["sources"]]
    sizes = {"posters": (40, 60, 5), "books": (80, 30, 7), "toys": (60, 30, 7)}  # users, items, mean length
    for domain in domains:
        write_recbole(synthetic_domain(domain["path"], *sizes[domain["path"]]), tmp_path / "data")
    # As written, but for where the data is and how long it trains.
    config["data"]["init_args"]["data_root"] = str(tmp_path / "data")
    config["trainer"]["max_epochs"] = 2
    next(cb for cb in config["trainer"]["callbacks"] if cb["class_path"].endswith("DomainTransfer"))["init_args"][
        "source_epochs"
    ] = 1
    path = tmp_path / "my_transfer.yaml"
    path.write_text(yaml.safe_dump(config))

    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", DeprecationWarning)  # Python shows these only for code run as __main__
        done = cli_output(tmp_path, "fit", "--config", path)
    out, err = capfd.readouterr()

    run = tmp_path / "lightning_logs" / "my_transfer" / "version_0"  # named after the config file
    results = json.loads((run / "results.json").read_text())
    assert {"transfer", "target_only", "zero_shot"} <= results.keys() and results["sources"] == ["books", "toys"]
    summary = done.stdout.split("── result: ", 1)[1]
    assert summary.startswith("posters ← books, toys") and "\ntransfer " in summary and "\ntarget only " in summary
    assert (
        "lightning_logs/my_transfer/version_0/results.json" in summary and (run / "checkpoints" / "last.ckpt").is_file()
    )
    # Quiet: per-stage lines of our own (and the encoding bar); nothing from the libraries.
    for noise in ("Saving the dataset", "Loading weights", "Tip:", "GPU available", "LeafSpec", "Traceback"):
        assert noise not in out + err, noise
    assert "Encoding texts" in err and any(line.startswith("posters: 40 users") for line in done.log)
    assert [f"{w.category.__name__}: {w.filename}:{w.lineno}: {w.message}" for w in caught] == []

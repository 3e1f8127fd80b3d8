from pathlib import Path

import pytest
import yaml

from rec_transfer.bench.runs import prepare_config, summarize

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


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


def test_summarize_mean_and_sample_std():
    out = summarize([{"test/x": 1.0, "other": 5}, {"test/x": 3.0}], "test/")
    assert out == {"test/x": {"mean": 2.0, "std": 1.41421, "values": [1.0, 3.0]}}

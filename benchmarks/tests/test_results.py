"""benchmarks/results stays navigable: a short top level, every report on it indexed, no machine's paths."""

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_every_top_level_report_is_in_the_index():
    index = (RESULTS / "INDEX.md").read_text()
    named = set(re.findall(r"^\*\*`([^`]+?)/?`", index, re.MULTILINE))  # entries: **`Office.json`, **`sasrec_sweep/`
    top = [p for p in RESULTS.iterdir() if p.name not in ("INDEX.md", "archive")]
    assert len(top) + 2 <= 25 and "(archive/README.md)" in index
    missing = [p.name for p in top if p.name not in named and not (p.is_file() and p.stem + ".json" in named)]
    assert not missing, f"add these to {RESULTS / 'INDEX.md'}: {missing}"


def test_no_report_names_a_folder_of_one_machine():
    pattern = re.compile(r"(?<![\w.<>-])/(?:work|tmp|root|home|Users|mnt)/")
    found = [str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*") if p.is_file() and p.suffix != ".png"
             and pattern.search(p.read_text())]  # fmt: skip
    assert not found, f"machine-local paths in {found}: write <data_root>, <tmp> or a path relative to the checkout"

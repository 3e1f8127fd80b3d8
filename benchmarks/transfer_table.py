"""The transfer benchmark's configs per variant and target, its Markdown table / PNG chart, and reports gathered."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import yaml

from benchmarks.runs import ROOT, not_rerun, variant_result
from benchmarks.variants import DOMAINS, METRICS, VARIANTS
from rec_transfer.cli import target_only_config


def default_sources(target: str) -> list[str]:
    return [d for d in DOMAINS if d != target]


def config_name(variant: str) -> str:
    """The shipped config a variant starts from, as reports name it."""
    spec = VARIANTS[variant]
    return spec["config"] + (" (target only)" if spec.get("target_only") else "")


def variant_config(variant: str, target: str, sources: list[str], source_epochs: int | None = None) -> dict:
    """The config of ``variant`` with ``target`` (and, for transfer, ``sources``) swapped in."""
    spec = VARIANTS[variant]
    if target not in DOMAINS or any(s not in DOMAINS for s in sources):
        raise ValueError(f"unknown domain in target {target!r} / sources {sources}; known: {sorted(DOMAINS)}")
    if target in sources:
        raise ValueError(f"target {target!r} cannot also be a source")
    cfg = yaml.safe_load((ROOT / spec["config"]).read_text())
    cfg["model"].update(spec.get("model", {}))
    # False: none (decay 0; without the callback a fit with sources would average by default); a dict: its settings
    averaging = spec.get("average", {})
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"].endswith("TargetWeightAveraging"):
            cb.setdefault("init_args", {}).update({"decay": 0.0} if averaging is False else averaging)
    if spec.get("target_only"):  # after the model's changes: the target-only run trains at their target_lr
        cfg = target_only_config(cfg)
    data = cfg["data"]["init_args"]
    data["target"]["init_args"]["path"] = DOMAINS[target]
    if "sources" in data:
        if not sources:
            raise ValueError(f"variant {variant!r} transfers: give at least one source domain")
        template = data["sources"][0]  # sources keep the config's source settings (e.g. their batch size)
        data["sources"] = []
        for name in sources:
            source = copy.deepcopy(template)
            source["init_args"]["path"] = DOMAINS[name]
            data["sources"].append(source)
        for cb in cfg["trainer"]["callbacks"]:
            if not cb["class_path"].endswith("DomainTransfer"):
                continue
            if source_epochs is not None:
                cb["init_args"]["source_epochs"] = source_epochs
            for key in ("freeze", "handover", "anchor", "reinit"):
                if key in spec:
                    cb["init_args"][key] = spec[key]
            if spec.get("sources_only"):  # every epoch on the sources: no early switch, no target step
                cb["init_args"]["source_patience"] = None
                cfg["trainer"]["max_epochs"] = cb["init_args"]["source_epochs"]
    if spec.get("joint"):
        data["joint"] = True
    for key in ("source_mixing", "rehearsal"):
        if key in spec:
            data[key] = spec[key]
    if "text_encoder" in spec:
        for domain in [data["target"], *data.get("sources", [])]:
            domain["init_args"]["text_encoder"].update(spec["text_encoder"])
    return cfg


def earlier_results(
    path: Path, running: list[str], sources: list[str], source_epochs: int | None, seeds: list[int]
) -> dict:
    """The variants of the earlier report at ``path`` that are not ``running`` now, to keep in the new table.

    Only rows of the same sources, source epochs and seeds are kept (others would not compare in one
    table): checked before any run starts, so a mismatch costs nothing. Each kept variant carries the
    command and commit that measured it (``provenance``).
    """
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    kept = not_rerun(earlier, running)
    settings = (earlier.get("sources"), earlier.get("source_epochs"), earlier.get("seeds"))
    if kept and settings != (sources, source_epochs, seeds):
        raise ValueError(
            f"{path} holds {sorted(kept)} measured with sources, source epochs, seeds {settings}, not "
            f"{(sources, source_epochs, seeds)}: write this run elsewhere (--output-dir) or rerun those variants too"
        )
    return kept


def in_table_order(results: dict) -> dict:
    return {k: results[k] for k in [*VARIANTS, *results] if k in results}


def rows(results: dict) -> list[tuple[str, dict]]:
    """(label, summary) per table row: each variant, then each transfer variant's zero-shot point."""
    out = []
    for name, res in results.items():
        label = VARIANTS.get(name, {}).get("label", name)
        out.append((label, {m.split("/")[-1]: s for m, s in res["summary"].items() if m.startswith("test/")}))
        zero = {m.split("/")[-1]: s for m, s in res["summary"].items() if m.startswith("zeroshot_test/")}
        if zero:
            out.append((f"{label}: zero-shot (before fine-tuning)", zero))
    return out


def markdown_table(results: dict, target: str, seeds: list[int], published: dict) -> str:
    head = f"| model ({target}, {len(seeds)} seeds: mean ± std) | " + " | ".join(METRICS) + " | s / train epoch |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    epoch_s = {VARIANTS.get(n, {}).get("label", n): r.get("mean_train_epoch_seconds") for n, r in results.items()}
    for label, summary in rows(results):
        cells = [f"{summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}" if m in summary else "—" for m in METRICS]
        secs = epoch_s.get(label)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {secs if secs is not None else ''} |")
    for label, values in published.items():
        cells = [f"{values[m]:.4f}" if m in values else "—" for m in METRICS]
        lines.append(f"| *published: {label}* | " + " | ".join(cells) + " | |")
    return "\n".join(lines) + "\n"


def plot(results: dict, target: str, path: Path, published: dict) -> None:
    """Bar chart of test NDCG@10 and Recall@10 (mean, std as error bars), published numbers as lines."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    table = rows(results)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 * len(table) + 3.5), sharey=True)
    for ax, metric in zip(axes, ("ndcg@10", "recall@10"), strict=True):
        labels = [label for label, s in table if metric in s]
        means = [s[metric]["mean"] for _, s in table if metric in s]
        stds = [s[metric]["std"] for _, s in table if metric in s]
        ax.barh(labels, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=3)
        for i, (name, values) in enumerate(published.items()):
            if metric in values:
                ax.axvline(values[metric], linestyle="--", color=f"C{i + 1}", label=name)
        ax.set_xlabel(f"test {metric}")
        ax.invert_yaxis()
        if published:  # below the axes: inside, it hides the bars
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.suptitle(f"{target}: full ranking, leave-one-out")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, stem: Path) -> str:
    """``<stem>.json``, the Markdown table with each row's command and commit (``.md``) and the chart (``.png``)
    of a transfer ``report``; returns the table."""
    results, sources = report["results"], report["sources"]
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    # The papers' numbers, where the report's runs train on the same data as they did (see benchmarks.transfer).
    published = report.get("published", {})
    table = markdown_table(results, report["target"], report["seeds"], published)
    measured_by = {}  # command and commit -> variants they measured
    for variant, res in results.items():
        for p in as_list(res["provenance"]):
            measured_by.setdefault((p["command"], p["git_commit"], p["machine"]["device"]), []).append(variant)
    header = "".join(
        f"Command: `{cmd}`  \nCommit: `{commit}`; machine: {device}; rows: {', '.join(variants)}\n\n"
        for (cmd, commit, device), variants in measured_by.items()
    )
    stem.with_suffix(".md").write_text(f"{header}Sources: {', '.join(sources)}\n\n{table}")
    plot(results, report["target"], stem.with_suffix(".png"), published)
    return table


def add_rows(report: dict, other: dict) -> dict:
    """``report`` with the variants of ``other`` (a report of the same target, sources, source epochs and seeds)
    added or replaced, each keeping the command and commit that measured it."""
    settings = [(r["target"], r["sources"], r["source_epochs"], r["seeds"]) for r in (report, other)]
    if settings[0] != settings[1]:
        raise ValueError(f"reports of other settings (target, sources, source epochs, seeds): {settings}")
    added = not_rerun(other, [])
    kept = not_rerun(report, list(added))
    return report | {"results": in_table_order(kept | added)}


def add_seeds(report: dict, other: dict) -> dict:
    """``report`` with the seeds of ``other`` (a report of the same target, sources, source epochs and variants, on
    other seeds) added to each variant: its summary over every seed, and both commands in its provenance."""
    settings = [(r["target"], r["sources"], r["source_epochs"], sorted(r["results"])) for r in (report, other)]
    if settings[0] != settings[1]:
        raise ValueError(f"reports of other settings (target, sources, source epochs, variants): {settings}")
    if set(report["seeds"]) & set(other["seeds"]):
        raise ValueError(f"seeds {report['seeds']} and {other['seeds']} overlap: a seed is measured once")
    mine, theirs = not_rerun(report, []), not_rerun(other, [])
    results = {}
    for name, res in mine.items():
        per_seed = sorted(res["per_seed"] + theirs[name]["per_seed"], key=lambda r: r["seed"])
        results[name] = variant_result(res["config"], per_seed)
        results[name]["provenance"] = [*as_list(res["provenance"]), *as_list(theirs[name]["provenance"])]
    return report | {"seeds": sorted(report["seeds"] + other["seeds"]), "results": in_table_order(results)}


def as_list(provenance: dict | list[dict]) -> list[dict]:
    """A variant's provenance as a list: one entry per command that measured some of its seeds."""
    return provenance if isinstance(provenance, list) else [provenance]


def main() -> None:
    """``python -m benchmarks.transfer_table REPORT.json [MORE.json ...]``: adds the rows of MORE to REPORT (or,
    where MORE measured the same variants on other seeds, its seeds), then writes its JSON, table and chart again."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("more", type=Path, nargs="*")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    for path in args.more:
        more = json.loads(path.read_text())
        report = add_rows(report, more) if more["seeds"] == report["seeds"] else add_seeds(report, more)
    print(write_report(report, args.report.with_suffix("")))


if __name__ == "__main__":
    main()

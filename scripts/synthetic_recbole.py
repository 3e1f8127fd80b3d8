"""Write SYNTHETIC domains as RecBole atomic folders, to try a config on before one's own data is at hand.

Three domains by default, sharing users' tastes and topic words (``rec_transfer.data.synthetic``): two larger
sources and a small target, as in ``configs/quickstart.yaml``.

Example:
    python scripts/synthetic_recbole.py /tmp/demo   # /tmp/demo/{books,toys,posters}/<name>.{inter,item}
"""

from __future__ import annotations

import argparse

from rec_transfer.data.synthetic import synthetic_domain, write_recbole

SIZES = {"books": (1500, 300, 12), "toys": (1500, 300, 12), "posters": (200, 150, 6)}  # users, items, mean length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder to write one sub-folder per domain into")
    parser.add_argument("--domains", nargs="+", default=list(SIZES), help="default: books toys posters")
    args = parser.parse_args()
    for name in args.domains:
        users, items, length = SIZES.get(name, SIZES["posters"])
        folder = write_recbole(synthetic_domain(name, users, items, length), args.root)
        print(f"wrote {folder}")


if __name__ == "__main__":
    main()

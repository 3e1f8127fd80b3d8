"""SYNTHETIC domains where transfer through text works by construction.

Every domain draws its items from the same topics; an item's text is built from its topic's words
plus the domain's own nouns, so a language model maps same-topic items of different domains close
together. Users (shared ids across domains) have one taste over topics, and every domain follows
the same topic transitions (topic t is usually followed by topic t + 1). A model that learns the
transitions from text on a source domain can therefore rank a target domain it never saw.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from rec_transfer.data.raw import RawDomain
from rec_transfer.utils.files import atomic_write

TOPICS = [
    ["rocket", "galaxy", "orbit", "astronaut"],
    ["guitar", "melody", "concert", "drum"],
    ["soccer", "goal", "stadium", "referee"],
    ["garden", "flower", "seed", "soil"],
    ["ocean", "sailing", "boat", "harbor"],
    ["cooking", "recipe", "spice", "oven"],
    ["castle", "knight", "sword", "dragon"],
    ["camera", "photo", "lens", "portrait"],
    ["winter", "snow", "ski", "mountain"],
    ["puppy", "dog", "leash", "bone"],
    ["robot", "circuit", "battery", "sensor"],
    ["coffee", "espresso", "mug", "bean"],
]
DOMAIN_NOUNS = {
    "books": ["novel", "guide", "story", "book"],
    "toys": ["toy", "puzzle", "game", "plush"],
    "posters": ["poster", "print", "art", "canvas"],
    "apparel": ["shirt", "hoodie", "cap", "sock"],
}
ADJECTIVES = ["classic", "deluxe", "mini", "vintage", "modern", "giant", "happy", "bright", "quiet", "wild"]


def _rng(seed: int, *parts: str) -> np.random.Generator:
    digest = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def synthetic_domain(
    name: str,
    num_users: int = 500,
    num_items: int = 200,
    mean_length: float = 10.0,
    seed: int = 0,
    stay: float = 0.15,
    step: float = 0.7,
) -> RawDomain:
    """One SYNTHETIC domain; the same ``seed`` gives every domain the same users and tastes.

    Args:
        name: domain name; one of ``DOMAIN_NOUNS`` picks its nouns, any other name hashes to one.
        num_users: users ``u0 … u{num_users-1}``; the same id has the same taste in every domain.
        num_items: items, spread evenly over topics.
        mean_length: mean history length (at least 3).
        seed: shared across the domains of one experiment.
        stay: probability the next item keeps the current topic.
        step: probability the next item moves to the next topic; else it follows the user's taste.
    """
    nouns = DOMAIN_NOUNS.get(name) or list(DOMAIN_NOUNS.values())[int(hashlib.sha256(name.encode()).digest()[0]) % 4]
    k = len(TOPICS)
    rng = _rng(seed, "domain", name)
    item_topic = np.arange(num_items) % k
    texts = []
    for i in range(num_items):
        words = rng.choice(TOPICS[item_topic[i]], size=2, replace=False)
        texts.append(f"{rng.choice(ADJECTIVES)} {words[0]} {words[1]} {rng.choice(nouns)}")
    popularity = rng.zipf(1.6, size=num_items).clip(max=50).astype(float)

    users, items, stamps = [], [], []
    for u in range(num_users):
        taste = _rng(seed, "user", str(u)).dirichlet(np.full(k, 0.3))  # shared across domains
        urng = _rng(seed, "seq", name, str(u))
        length = max(3, int(urng.poisson(mean_length - 3)) + 3)
        topic = urng.choice(k, p=taste)
        for t in range(length):
            pool = np.flatnonzero(item_topic == topic)
            p = popularity[pool] / popularity[pool].sum()
            users.append(f"u{u}")
            items.append(f"{name}-{int(urng.choice(pool, p=p))}")
            stamps.append(float(t))
            r = urng.random()
            topic = topic if r < stay else (topic + 1) % k if r < stay + step else urng.choice(k, p=taste)
    interactions = pa.table(
        {"user_id": pa.array(users), "item_id": pa.array(items), "timestamp": pa.array(stamps, pa.float64())}
    )
    item_table = pa.table({"item_id": [f"{name}-{i}" for i in range(num_items)], "text": texts})
    return RawDomain(
        name=name,
        interactions=datasets.Dataset(interactions),
        items=datasets.Dataset(item_table),
        text_fields=["text"],
        source=f"synthetic:{name} (seed {seed})",
    )


def write_recbole(raw: RawDomain, root: str | Path) -> Path:
    """Writes a domain as RecBole atomic files, ``<root>/<name>/<name>.inter`` and ``.item``: the layout
    ``DomainDataModule(path=...)`` reads, e.g. to try a config before one's own data is at hand."""
    folder = Path(root) / raw.name
    folder.mkdir(parents=True, exist_ok=True)
    inter = raw.interactions.data
    rows = zip(*(inter.column(c).to_pylist() for c in ("user_id", "item_id", "timestamp")), strict=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float", *(f"{u}\t{i}\t{t:g}" for u, i, t in rows)]
    atomic_write(folder / f"{raw.name}.inter", "\n".join(lines) + "\n")
    items = raw.items.data
    fields = ["item_id", *raw.text_fields]
    columns = [items.column(f).to_pylist() for f in fields]
    header = "\t".join(["item_id:token", *(f"{f}:token_seq" for f in raw.text_fields)])
    atomic_write(folder / f"{raw.name}.item", "\n".join([header, *map("\t".join, zip(*columns, strict=True))]) + "\n")
    return folder

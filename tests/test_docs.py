"""The docs name what the code does."""

import pathlib

from pyro_mixup.families import ALL_FAMILIES

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def test_pooling_page_lists_every_family():
    text = (DOCS / "pooling.md").read_text()
    missing = [f.name for f in ALL_FAMILIES if f.name not in text]
    assert not missing, f"docs/pooling.md does not mention {missing}"

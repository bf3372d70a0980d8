"""The tree matches the map: every room is in the README's layout table, with its page.

A room is a package folder under the four layers and the testing kit. Adding, moving or
removing one without updating the map (and ``docs/README.md``) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("domain", "process", "projections", "infrastructure", "testing")
#: A row of a layout table: `` | `process/store/` | what lives there | [page](docs/….md) | ``.
ROW = re.compile(r"^\| `([a-z_/]+/)` \|.*\[[^\]]+\]\((?:docs/)?([\w-]+\.md)\)", re.M)


def _rooms() -> set[str]:
    return {
        f"{init.parent.relative_to(ROOT).as_posix()}/"
        for layer in LAYERS
        for init in (ROOT / layer).rglob("__init__.py")
    }


def _mapped(text: str) -> dict[str, str]:
    return dict(ROW.findall(text))


def test_the_readme_map_lists_every_room_and_nothing_else() -> None:
    mapped = _mapped((ROOT / "README.md").read_text(encoding="utf-8"))
    assert set(mapped) == _rooms()


def test_every_room_has_a_page_and_the_docs_index_agrees() -> None:
    readme = _mapped((ROOT / "README.md").read_text(encoding="utf-8"))
    index = dict(
        re.findall(
            r"^\| `([a-z_/]+/)` —.*\(([\w-]+\.md)\)",
            (ROOT / "docs" / "README.md").read_text(encoding="utf-8"),
            re.M,
        )
    )
    assert index == readme
    missing = sorted(page for page in readme.values() if not (ROOT / "docs" / page).is_file())
    assert missing == []

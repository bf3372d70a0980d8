"""A parallel saga in the console: its path as a graph with each step's state, every
step in flight in the list, and the step filter matching any of them."""

from __future__ import annotations

import re

from console_support import Client, Console

from sagalog.infrastructure.console.pictures import Shape, path_picture


def _nodes(shapes: list[Shape]) -> dict[str, Shape]:
    """The action boxes of a path picture, by step name (their titles start with it)."""
    return {
        shape.title.split(" ")[0]: shape
        for shape in shapes
        if shape.kind == "rect" and "node" in shape.css and "comp" not in shape.css
    }


def test_the_path_draws_branches_side_by_side_under_their_dependency(console: Console) -> None:
    story = console.store.story(console.trips["in_flight"])
    picture = path_picture(story)
    nodes = _nodes(picture.shapes)
    assert list(nodes) == ["budget", "hotel", "flight", "car", "confirm"]
    layer = {name: shape.y for name, shape in nodes.items()}
    assert layer["budget"] < layer["hotel"] == layer["flight"] == layer["car"] < layer["confirm"]
    assert len({nodes[name].x for name in ("hotel", "flight", "car")}) == 3
    states = {name: shape.css.removeprefix("node ") for name, shape in nodes.items()}
    assert states == {
        "budget": "done",
        "hotel": "inflight",
        "flight": "done",
        "car": "inflight",
        "confirm": "remaining",
    }
    # One edge from budget to each branch and one from each branch to confirm.
    edges = [s for s in picture.shapes if s.kind == "line" and s.css == "edge"]
    assert len(edges) == 6
    assert {(e.w, e.h) for e in edges if e.y < layer["hotel"]} == {
        (nodes[name].x + nodes[name].w / 2, layer[name]) for name in ("hotel", "flight", "car")
    }
    assert picture.width == 610  # three branches share the width of a chain (and margins)


def test_a_timed_out_step_being_compensated_reads_uncertain_not_done(console: Console) -> None:
    story = console.store.story(console.trips["uncertain"])
    statuses = {step.name: step.status for step in story.snapshot.steps}
    assert statuses["hotel"] == "COMPENSATION_DISPATCHED"  # it timed out: uncertain
    assert statuses["flight"] == "COMPENSATION_DISPATCHED"  # it completed
    states = {
        name: shape.css.removeprefix("node ")
        for name, shape in _nodes(path_picture(story).shapes).items()
    }
    assert states["hotel"] == "uncertain"
    assert states["flight"] == "done"

    page = Client(console.url).get(f"/sagas/{console.trips['uncertain']}").text
    assert 'class="node uncertain"><title>hotel (Hotel.Book): COMPENSATION_DISPATCHED' in page
    assert re.search(r"<dt>steps in flight</dt><dd>hotel, flight, car</dd>", page)


def test_the_sagas_list_shows_every_step_in_flight_and_filters_on_any(console: Console) -> None:
    client = Client(console.url)
    uncertain, in_flight = str(console.trips["uncertain"]), str(console.trips["in_flight"])
    listed = client.get("/sagas?step=flight").text
    assert uncertain in listed
    assert in_flight not in listed  # its flight completed; car was dispatched after it
    listed = client.get("/sagas?step=hotel").text
    assert uncertain in listed
    assert in_flight in listed
    assert "<td>hotel, car</td>" in listed
    found = client.json("/api/sagas?step=car")
    assert {row["saga_id"] for row in found["sagas"]} >= {uncertain, in_flight}
    assert {row["saga_id"]: row["steps_in_flight"] for row in found["sagas"]}[in_flight] == [
        "hotel",
        "car",
    ]

"""Checks on a report's matplotlib figures before they are closed: tick labels that overlap, and the
colour each method is drawn in (from the legend), so a test can compare figures with each other."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Drawn:
    name: str
    overlaps: list[str] = field(default_factory=list)
    colours: dict[str, str] = field(default_factory=dict)  # method -> colour in this figure
    tick_labels: dict[str, list[str]] = field(default_factory=dict)  # "<axes>.<x|y>" -> visible labels


def _visible_tick_labels(axis, renderer):
    lo, hi = sorted(axis.get_view_interval())
    out = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        label = tick.label1
        if label.get_visible() and label.get_text() and lo - 1e-12 <= tick.get_loc() <= hi + 1e-12:
            out.append((label.get_text(), label.get_window_extent(renderer)))
    return out


def inspect(fig, name: str) -> Drawn:
    from matplotlib.colors import to_hex

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    drawn = Drawn(name)
    for i, ax in enumerate(fig.axes):
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labels = _visible_tick_labels(axis, renderer)
            drawn.tick_labels[f"{i}.{which}"] = [text for text, _ in labels]
            for a in range(len(labels)):
                for b in range(a + 1, len(labels)):
                    if labels[a][1].overlaps(labels[b][1]):
                        drawn.overlaps.append(f"{name} axes {i} {which}: {labels[a][0]!r} over {labels[b][0]!r}")
        handles, texts = ax.get_legend_handles_labels()
        for handle, text in zip(handles, texts):
            method = text.split()[0].rstrip(",")
            colour = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()
            if not isinstance(colour, str) and len(colour) and not isinstance(colour[0], float):
                colour = colour[0]
            drawn.colours.setdefault(method, to_hex(colour))
    return drawn


def capture(monkeypatch) -> list[Drawn]:
    """Every figure the report saves from now on, inspected just before it is written and closed."""
    import pipelines.report as report

    seen: list[Drawn] = []
    original = report._save

    def save(fig, path: Path):
        seen.append(inspect(fig, Path(path).stem))
        return original(fig, path)

    monkeypatch.setattr(report, "_save", save)
    return seen


def check_figures(seen: list[Drawn]) -> None:
    """No overlapping tick labels in any figure; each method in one colour across all of them."""
    assert seen, "no figure was drawn"
    problems = [o for d in seen for o in d.overlaps]
    assert not problems, problems
    colour_of: dict[str, set[str]] = {}
    for d in seen:
        for method, colour in d.colours.items():
            colour_of.setdefault(method, set()).add(colour)
    assert {m: c for m, c in colour_of.items() if len(c) > 1} == {}, colour_of

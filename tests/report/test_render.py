"""The report page: escaped text, plotly.js once, every section, failed sections, timings."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

from mechscope.report.render import plotly_js, render_report, report_json, write_report
from mechscope.report.sections import DemoConfig, Section

EVIL = '<script>window.__xss=1</script><img src=x onerror="x()"> & "q"'


def _sections() -> list[Section]:
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    ok = Section(
        "one",
        f"First {EVIL}",
        f"asked {EVIL}",
        [f"mechscope patch --task {EVIL}"],
        finding=f"found {EVIL}",
        figures=[fig, go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))],
        numbers={"x": 1.5, "nan": float("nan"), "evil": EVIL},
        links=[("page", "report_files/page.html")],
        seconds=1.25,
    )
    bad = Section("two", "Second", "asked two", ["mechscope acdc"], error=f"boom {EVIL}")
    bad.seconds = 0.5
    return [ok, bad]


def test_render_escapes_and_inlines_plotly_once() -> None:
    page = render_report(_sections(), {"quick": True, "date": EVIL})
    js = plotly_js()
    assert page.count(js[:300]) == 1  # the bundle once
    assert page.count("<script") == 1 + 2  # the bundle + one script per figure
    assert "<script src" not in page and "<link" not in page  # nothing fetched
    assert EVIL not in page  # only escaped
    assert html_escaped(EVIL) in page
    for key in ("one", "two"):
        assert f'<section id="{key}"' in page
    assert page.count('class="plotly-graph-div"') == 2
    assert 'id="fig-one-0"' in page and 'id="fig-one-1"' in page
    assert "failed:</b> boom" in page  # the failed section says so
    assert 'href="report_files/page.html"' in page


def html_escaped(s: str) -> str:
    import html

    return html.escape(s, quote=True)


def test_timings_table_at_the_top() -> None:
    page = render_report(_sections(), {"quick": False}, total_seconds=3.0)
    table = page.index('id="timings"')
    assert table < page.index('<section id="one"')
    head = page[table : page.index("</table>", table)]
    assert "1.2 s" in head and "0.5 s" in head and "3.0 s" in head and "CPU time" in head
    assert "failed" in head and "ok" in head


def test_json_is_strict_and_complete(tmp_path) -> None:
    secs = _sections()
    data = report_json(secs, {"quick": True}, 1.75)
    text = json.dumps(data, allow_nan=False)  # NaN became null
    back = json.loads(text)
    assert back["sections"]["one"]["numbers"] == {"x": 1.5, "nan": None, "evil": EVIL}
    assert back["sections"]["two"]["ok"] is False
    assert back["sections"]["two"]["error"].startswith("boom")
    path = write_report(tmp_path / "r.html", secs, {"quick": True})
    assert path.read_text().startswith("<!doctype html>")
    assert not list(tmp_path.glob("*.tmp"))


def test_quick_config_is_smaller_than_full() -> None:
    full, quick = DemoConfig.make(False), DemoConfig.make(True)
    assert quick.quick and not full.quick
    assert quick.patch_n < full.patch_n and quick.acdc_n < full.acdc_n
    assert quick.regions_revisions is not None and len(quick.regions_revisions) <= 2
    assert quick.regions_prompts < full.regions_prompts
    assert quick.evolution_batches < full.evolution_batches
    assert full.acdc_tau == 0.01 and full.acdc_n == 16


@pytest.mark.parametrize("quick", [False, True])
def test_every_stage_has_a_rerun_command(quick: bool) -> None:
    from mechscope.report.sections import STAGES

    cfg = DemoConfig.make(quick)
    assert list(STAGES) == [
        "patching", "circuits", "saes", "directions", "evolution", "regions", "basis",
    ]  # fmt: skip
    for (key, title, question), commands, _ in STAGES.values():
        cmds = commands(cfg)
        assert cmds and all(c.startswith(("mechscope ", "for ")) for c in cmds), key
        assert title and "?" in question, key

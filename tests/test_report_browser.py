"""The HTML report opened in headless Chromium: every figure loads from the page itself, the tables render,
and a screenshot shows a page, not a blank."""

import json

import pytest

from maple_utils.analysis import report
from synthetic_results import synthetic_grid


@pytest.fixture(scope="module")
def chromium():
    import chromium_local

    try:
        chromium_local.executable()
    except chromium_local.Unavailable as err:
        pytest.skip(str(err))
    return chromium_local


def test_the_report_opens_in_headless_chromium_with_its_figures_and_tables(chromium, tmp_path):
    import matplotlib.pyplot as plt

    frame, _ = synthetic_grid(tmp_path)
    page = report.write_report(str(tmp_path), frame)["html"]
    assert "src='rank_quant.png'" not in page.read_text()  # the figure travels inside the page
    check = chromium.page_facts(page)
    assert check["title"] == "MAPLE report"
    assert check["images"] >= 1 and check["loaded"] == check["images"]
    # Table 1, every configuration, Table 2, the paired comparisons: each with a header and rows
    assert check["tables"] >= 4 and all(rows >= 2 for rows in check["rows"])
    # under Table 1, the legend: each column's metric, the interval, the mark
    assert check["legend"].startswith("Metrics (megaverse scoring; xnli: acc_megaverse, xquad: squad_f1_megaverse")
    assert "95% bootstrap interval" in check["legend"] and "†" in check["legend"]
    drawn = {f["title"].split(":")[0]: f for f in json.loads((tmp_path / "report" / "figures.json").read_text())}
    # our bars carry their intervals: the base model and the best configuration, on XNLI and XQuAD
    assert drawn["Figure 2"]["errorbars"] == 4 and drawn["Figure 4"]["errorbars"] > 0
    assert b"/Type3" not in (tmp_path / "report" / "figure2_best_vs_off_the_shelf.pdf").read_bytes()
    shot = tmp_path / "report.png"
    proc = chromium.run(f"--screenshot={shot}", "--window-size=1300,2000", page.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = plt.imread(shot)
    assert pixels.shape[0] == 2000 and pixels.std() > 0.05  # text, tables and a figure, not a blank page

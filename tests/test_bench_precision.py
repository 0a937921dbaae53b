"""benchmarks/bench_precision.py's arithmetic (the timed runs are not a test): agreement with fp32 and the
worst-image rule that decides whether a precision may stand in for fp32; and the tables the docs' plots are
drawn from (benchmarks/make_figures.py) are where it looks for them."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_precision as bp
from benchmarks import make_figures


def test_agreement_counts_flips_and_mean_error():
    ref = np.array([[0.0, 0.45, 0.55, 1.0]], np.float32)
    alpha = np.array([[0.02, 0.52, 0.55, 1.0]], np.float32)  # one pixel crosses 0.5
    a = bp.agreement(alpha, ref)
    assert a["mean_delta"] == pytest.approx((0.02 + 0.07) / 4)
    assert a["same_side"] == pytest.approx(0.75)
    assert a["near_half"] == pytest.approx(0.5)  # 0.45 and 0.55 are within 0.1 of 0.5


def _runs(seconds, alpha):
    return {"seconds": seconds, "alpha": alpha}


def test_summary_takes_medians_ratios_and_the_worst_image():
    ref = np.zeros((4, 4), np.float32)
    close, off = ref + 0.005, ref.copy()
    off[0, :] = 0.9  # a quarter of the pixels flipped
    net = {(512, "fp32"): _runs([2.0, 4.0, 3.0], ref), (512, "bf16"): _runs([1.0, 1.5, 2.0], close),
           (512, "int8"): _runs([3.0, 3.0, 3.0], close)}
    proc = {(512, "fp32"): {"seconds": [10.0], "masks": {"a.png": ref, "b.png": ref}},
            (512, "bf16"): {"seconds": [5.0], "masks": {"a.png": close, "b.png": close}},
            (512, "int8"): {"seconds": [12.0], "masks": {"a.png": close, "b.png": off}}}
    rows = {r["precision"]: r for r in bp.summarise(net, proc, [512], ["fp32", "bf16", "int8"])}
    assert rows["bf16"]["network_s"] == 1.5 and rows["bf16"]["network_vs_fp32"] == pytest.approx(0.5)
    assert rows["bf16"]["process_vs_fp32"] == pytest.approx(0.5)
    assert rows["bf16"]["agrees"] and rows["fp32"]["agrees"]
    assert rows["int8"]["same_side"] == pytest.approx(0.75) and not rows["int8"]["agrees"]  # b.png decides
    table = bp.markdown(list(rows.values()), 2)
    assert table.count("\n") == 4 and "| 512 | int8 |" in table and "| no |" in table


def test_the_plots_source_tables_are_in_the_docs():
    memory = make_figures.doc_table("performance.md", "| size | config | peak RSS")
    assert len(memory) >= 4 and all("→" in row[2] for row in memory)
    band = make_figures.doc_table("refinement.md", "| image | band MSE coarse")
    assert len(band) == 27 and all(len(make_figures._numbers(row[1])) >= 3 for row in band)
    with pytest.raises(ValueError, match="docs/refinement.md: no table"):
        make_figures.doc_table("refinement.md", "| no such header")
    rows = make_figures.markdown_table("| a | b |\n|---|---|\n| `x\\|y` | 2 |\ntext\n| c | d |\n", "| a |")
    assert rows == [["`x|y`", "2"]]

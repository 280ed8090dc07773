"""`fastdraft bench` reporting: totals and the per-prompt paired ratio, and input checked before models load."""

import argparse

import pytest

from fastdraft import bench


def test_summary_and_table_report_the_per_prompt_ratio(capsys):
    plain = bench.Tally("ours plain", tokens=200, seconds=20.0, exact=2, runs=2, paired_ratios=[1.0, 1.0])
    fast = bench.Tally("ours k=3", tokens=200, seconds=12.5, exact=1, runs=2, paired_ratios=[1.2, 1.6, 1.4])
    tallies = {t.name: t for t in (plain, fast)}

    row = bench.summary(fast, tallies)
    assert row["ratio_to_ours_plain"] == pytest.approx(1.6)
    assert row["paired_ratio_median"] == pytest.approx(1.4)
    assert row["paired_ratio_range"] == [1.2, 1.6]

    bench.print_table(tallies)
    table = capsys.readouterr().out
    assert "| ours k=3 | 16.00 | 1.60 | 1.40 [1.20-1.60] |" in table


def test_rounds_below_one_is_refused_before_any_model_loads():
    args = argparse.Namespace(rounds=0, target="no-such-model")
    with pytest.raises(SystemExit, match="--rounds must be at least 1, got 0"):
        bench.run(args)


def test_first_difference_locates_where_an_output_leaves_the_reference():
    assert bench.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert bench.first_difference([1, 9, 3], [1, 2, 3]) == 1
    assert bench.first_difference([1, 2], [1, 2, 3]) == 2  # stopped early: differs where it ended

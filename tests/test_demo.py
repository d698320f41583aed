"""The demo's end-to-end path on a tiny budget (the full run is `make demo`)."""

import math

import pytest

pytest.importorskip("mlxtend")

from visattn.demo import main  # noqa: E402


def test_demo_runs_end_to_end_and_reports_both_heads(capsys):
    results = main(["--epochs", "1", "--train-samples", "128", "--test-samples", "64", "--threads", "1"])
    assert [r["head"] for r in results] == ["gap", "csra"]
    for r in results:
        assert 0.0 < r["mAP"] <= 1.0 and not math.isnan(r["mAP"])
    assert 0.0 <= results[1]["peak_in_glyph"] <= 1.0
    out = capsys.readouterr().out
    assert "test mAP" in out and "csra" in out

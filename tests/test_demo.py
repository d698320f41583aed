"""The demo's end-to-end path on a tiny budget (the full run is `make demo`)."""

import json
import math

import pytest

pytest.importorskip("mlxtend")

from visattn.demo import main  # noqa: E402


def test_demo_trains_both_recipes_and_writes_the_table(tmp_path, capsys):
    results = main(
        [
            "--epochs",
            "1",
            "--train-samples",
            "128",
            "--val-samples",
            "32",
            "--test-samples",
            "64",
            "--out",
            str(tmp_path),
            "--threads",
            "1",
        ]
    )
    assert [r["head"].split(" ")[0] for r in results] == ["gap", "gap", "csra"]
    for r in results:
        for key in ("mAP", "CF1", "OF1"):
            assert 0.0 <= r[key] <= 1.0 and not math.isnan(r[key])
    assert 0.0 <= results[-1]["peak_in_glyph"] <= 1.0
    table = (tmp_path / "results.md").read_text()
    assert "csra" in table and "mAP" in table and table in capsys.readouterr().out
    assert len(json.loads((tmp_path / "results.json").read_text())) == 3
    for name in ("gap", "csra"):
        assert (tmp_path / name / "log.csv").is_file()
        assert (tmp_path / name / "checkpoints" / "epoch_0001.safetensors").is_file()
        assert (tmp_path / name / "best.safetensors").is_file()

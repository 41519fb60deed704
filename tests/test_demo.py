"""The demo end to end on its quick size: every file written, the table and conclusion computed from numbers."""

import json

from transferlab.cli import main


def test_quick_demo_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--seeds", "2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["final"]) == {"pretrained", "scratch"}
    assert all(len(v) == 2 for v in results["final"].values())
    gain = sum(results["final"]["pretrained"]) / 2 - sum(results["final"]["scratch"]) / 2
    assert abs(results["gain"] - gain) < 1e-9
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "| pretrained |" in printed and f"{gain:+.3f}"[1:] in printed or "did not help" in printed
    assert main(["demo", "--quick", "--out", str(out)]) == 2, "an existing demo output is not overwritten"

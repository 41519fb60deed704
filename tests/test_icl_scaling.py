"""icl-scaling on a tiny configuration: a family pretrained on the synthetic corpus, table, JSON and plot."""

import json

from transferlab.cli import main


def test_icl_scaling_tiny(tmp_path, capsys):
    out = tmp_path / "scaling"
    assert main(["icl-scaling", "--out", str(out), "--sizes", "tiny,mini", "--steps", "3", "--seq-len", "32",
                 "--batch-size", "4", "--shots", "0,1", "--limit", "8", "--precision", "fp32", "--quiet"]) == 0
    summary = json.loads((out / "results.json").read_text())
    models = summary["models"]
    assert [m["name"] for m in models] == ["tiny", "mini"]
    assert models[0]["params"] < models[1]["params"]
    for m in models:
        for k in ("0", "1"):
            r = m["results"]["pattern"][k]
            assert 0 <= r["acc"] <= 1 and r["n"] == 8 and r["shots"] == int(k)
    table = (out / "table.md").read_text()
    assert table.count("| pattern |") == 4
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "models" / "mini" / "final" / "model.safetensors").is_file()
    # a second run refuses to clobber, and evaluating existing checkpoints needs no pretraining
    assert main(["icl-scaling", "--out", str(out), "--sizes", "tiny", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["icl-scaling", "--out", str(tmp_path / "again"), "--checkpoints",
                 str(out / "models" / "tiny" / "final"), "--shots", "0", "--limit", "4", "--quiet"]) == 0
    assert json.loads((tmp_path / "again" / "results.json").read_text())["models"][0]["name"] == "tiny"

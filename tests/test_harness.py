"""The benchmarks' timing harness (benchmarks/harness.py), loaded from its path: the clock, interleaved
medians, the in-network timer, the machine description, the shared options and the result file."""
import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "harness.py"
spec = importlib.util.spec_from_file_location("benchmark_harness", PATH)
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)
CPU = torch.device("cpu")


def work(n=20):
    """A little seeded CPU work with a known result."""
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    for _ in range(n):
        x = torch.tanh(x @ x.T / 64)
    return x


def test_clock_returns_time_and_output():
    seconds, out = harness.clock(work, CPU)
    assert seconds > 0
    torch.testing.assert_close(out, work())


def test_interleaved_medians_and_call_timer():
    calls = []
    timer = harness.CallTimer(lambda x, t: calls.append(t) or work(5))
    fns = {"a": lambda: timer(None, "a"), "b": lambda: (timer(None, "b"), timer(None, "b"))[1]}
    res = harness.interleaved(fns, CPU, repeats=3, timer=timer)
    assert calls == ["a", "b", "b"] * 3  # one of each a round
    for key, (stats, out) in res.items():
        assert len(stats["seconds_repeats"]) == 3 and all(s > 0 for s in stats["seconds_repeats"])
        assert stats["seconds"] == sorted(stats["seconds_repeats"])[1]
        assert 0 < stats["network_seconds"] <= stats["seconds"]  # time inside the network is part of the run
        assert stats["peak_mem_mib"] > 0 and stats["base_mem_mib"] > 0
        torch.testing.assert_close(out, work(5))
    without = harness.interleaved({"a": work}, CPU, repeats=1)["a"][0]
    assert without["network_seconds"] is None


def test_machine_keys():
    info = harness.machine("cpu")
    assert {"device", "cpu", "cpu_count", "torch_threads", "torch", "python", "load_avg_start"} <= set(info)
    assert info["device"] == "cpu" and info["torch"] == torch.__version__ and "gpu" not in info
    assert info["torch_threads"] == torch.get_num_threads() >= 1 and len(info["load_avg_start"]) == 3


def test_save_json_records_date_machine_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py", "--out", "a b.json"])
    path = harness.save_json(tmp_path / "sub" / "r.json", {"rows": [1, 2], "value": torch.tensor(0.5).item()})
    saved = json.loads(path.read_text())
    assert list(saved)[:3] == ["date", "command", "machine"] and saved["rows"] == [1, 2] and saved["value"] == 0.5
    assert saved["command"].endswith("benchmarks/x.py --out 'a b.json'")
    assert saved["date"][:2] == "20" and {"cpu", "torch", "load_avg_start", "load_avg_end"} <= set(saved["machine"])
    mine = dict(harness.machine(), contention="test")  # a machine taken at the start is kept, load_avg_end added
    saved = json.loads(harness.save_json(tmp_path / "r2.json", {"machine": mine, "n": 3}).read_text())
    assert saved["machine"] == {**json.loads(json.dumps(mine)), "load_avg_end": saved["machine"]["load_avg_end"]}
    assert list(saved) == ["date", "command", "machine", "n"]


def test_shared_options():
    p = argparse.ArgumentParser(parents=[harness.shared_options(Path("r.json"), repeats=3)])
    args = p.parse_args([])
    assert (args.device, args.out, args.repeats) == ("cpu", Path("r.json"), 3)
    assert p.parse_args(["--repeats", "5", "--out", "x.json"]).repeats == 5
    for bad in (["--repeats", "0"], ["--device", "nonsense"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            p.parse_args(["--device", "cuda"])
    bare = argparse.ArgumentParser(parents=[harness.shared_options(None, device=False)]).parse_args([])
    assert vars(bare) == {"out": None}

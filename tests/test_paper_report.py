"""The paper report's tables and findings, on crafted per-seed figures (the report's inputs, not results):
means and spreads over seeds, and a finding that says plainly when the paper's claim does not hold."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paper_report


def _scores(accuracy: float) -> dict:
    return {"accuracy": accuracy, "f1_weighted": accuracy - 0.01, "f1_macro": accuracy - 0.02}


def _seed(seed: int, ours: float, general: float) -> dict:
    """One seed's figures: SessionBERT at `ours`, the general BERT at `general` on every run."""
    def runs(accuracy: float) -> list[dict]:
        out = []
        for length in paper_report.LENGTHS:
            tasks = ("multitask", "service", "page") if length == paper_report.ABLATION_LENGTH else ("multitask",)
            for task in tasks:
                heads = paper_report.HEADS if task == "multitask" else (task,)
                out.append({"task": task, "max_length": length, "finetune_seconds": length / 10, "parameters": 10,
                            **{h: _scores(accuracy + length / 10_000) for h in heads}})
        return out

    tokens = {"tokens_per_activity": 3.0, "mean_tokens_per_session": 30.0,
              **{f"truncated_at_{n}": 0.0 for n in paper_report.LENGTHS}}
    head = {"sessionbert": _scores(ours), "popularity": _scores(0.1), "markov": _scores(0.4)}
    hit = {"n_users": 80, **{m: {"hit@3": 0.5, "hit@5": v} for m, v in
                             (("sessionbert", 0.6), ("popularity", 0.7), ("sessionbert_persona", 0.8),
                              ("oracle", 0.9))}}
    return {"seed": seed, "budget": {"train_sessions": 10, "test_sessions": 10, "epochs": 1},
            "full_budget": {"service": head, "page": head},
            "silhouette": {"sessionbert": {"2": 0.5, "10": 0.6}, "general_language": {"2": 0.4, "10": 0.7}},
            "chosen_k": 4, "hit_at_k": {"10": hit},
            "appendix_b": {"8": {"sessionbert": 0.6}, "15": {"sessionbert": 0.7}},
            "models": {"sessionbert": {"tokens": tokens, "runs": runs(ours)},
                       "minilm": {"tokens": tokens | {"tokens_per_activity": 9.0}, "runs": runs(general)}}}


def test_tables_average_over_seeds_with_their_spread():
    summary = paper_report.summarize([_seed(0, 0.60, 0.50), _seed(1, 0.70, 0.50)], "tiny")
    mean, sd = summary["tables"]["table2"]["service"]["sessionbert_ablation_budget"]["accuracy"]
    assert mean == pytest.approx(0.65 + 0.0128) and sd == pytest.approx(0.0707, abs=1e-3)
    assert list(summary["tables"]["figure2"]["sessionbert"]) == ["2", "10"]  # k in numeric order


def test_findings_say_when_the_paper_holds_and_when_it_does_not():
    ahead = paper_report.findings(paper_report.summarize([_seed(0, 0.6, 0.5)], "tiny"))
    behind = paper_report.findings(paper_report.summarize([_seed(0, 0.4, 0.5)], "tiny"))
    assert "holds on both heads" in ahead["table2"]
    assert "does not hold" in behind["table2"]
    assert "above at 1 of 2 values of k" in ahead["figure2"]  # the general model wins at k = 10
    assert "(not above it)" in ahead["table6"] and "86%" in ahead["appendix_b"]
    assert "does not shrink" in ahead["lengths"]  # the same lead at every length
    assert "SessionBERT service +0.000;" in ahead["table5"]  # alike here; one seed: no spread shown


def test_the_report_renders_every_table(tmp_path):
    summary = paper_report.summarize([_seed(0, 0.6, 0.5), _seed(1, 0.62, 0.5)], "tiny")
    notes = paper_report.findings(summary)
    text = paper_report.markdown(summary, notes, paper_report.draw(summary, tmp_path, "tiny"))
    for title in ("Table 2", "Tables 3 and 4", "Table 5", "Figure 2", "Table 6", "Appendix B"):
        assert f"## {title}" in text
    assert "| paper: SessionBERT | 0.931 | 0.932 | 0.73 | 0.753 |" in text
    assert (tmp_path / "paper-tiny-lengths.png").stat().st_size > 1000


def test_the_time_line_counts_the_graph_apart_from_the_ablations():
    ran = paper_report._timing({"seconds_per_seed": [900.0, 960.0], "graph_seconds": [540.0, 600.0], "cpu_cores": 2})
    assert ran == ("Time on this machine (2 CPU cores): 31.0 min for 2 seed(s), 6.0 min per seed for the ablations "
                   "and 9.5 min per seed for the whole graph it ran.")
    reused = paper_report._timing({"seconds_per_seed": [360.0], "graph_seconds": [None], "cpu_cores": 2})
    assert reused.endswith("6.0 min per seed for the ablations (the graph runs were reused from --homes).")

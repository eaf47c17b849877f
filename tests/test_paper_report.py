"""The paper report's tables and findings, on crafted per-seed figures (the report's inputs, not results):
means and spreads over seeds, and a finding that says plainly when the paper's claim does not hold."""

from __future__ import annotations

import pytest

from benchmarks import paper_report


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
    assert ahead["table2"].verdict == "holds" and ahead["table2"].figures["ahead_on"] == ["service", "page"]
    assert behind["table2"].verdict == "does not hold"
    assert behind["table2"].figures["f1_relative"]["service"] == pytest.approx(0.4028 / 0.5028 - 1)
    assert ahead["figure2"].figures["above_at"] == ["2"] and ahead["figure2"].verdict == "holds in part"  # k = 10 lost
    assert ahead["table6"].verdict == "does not hold"  # the count ranker 0.6 under popularity 0.7
    assert ahead["appendix_b"].figures["share"] == pytest.approx(6 / 7)
    assert ahead["lengths"].verdict == "does not hold"  # the same lead at every length: it does not shrink
    assert ahead["table5"].figures["gain"]["sessionbert"]["service"] == (0.0, 0.0)  # one seed: no spread


def test_a_claim_without_its_figures_is_left_out():
    summary = paper_report.summarize([_seed(0, 0.6, 0.5)], "tiny")
    summary["tables"]["figure2"].pop("general_language")
    summary["tables"]["table6"].clear()
    assert set(paper_report.findings(summary)) == {"table2", "lengths", "table5", "appendix_b"}


def test_the_report_renders_every_table(tmp_path):
    summary = paper_report.summarize([_seed(0, 0.6, 0.5), _seed(1, 0.62, 0.5)], "tiny")
    notes = paper_report.findings(summary)
    text = paper_report.markdown(summary, notes, paper_report.draw(summary, tmp_path, "tiny"))
    for title in ("Table 2", "Tables 3 and 4", "Table 5", "Figure 2", "Table 6", "Appendix B"):
        assert f"## {title}" in text
    rows = {line.split(" | ")[0].strip("| "): line.strip("|").split(" | ")[1:] for line in text.splitlines()
            if line.startswith("| ")}
    assert [c.strip() for c in rows["paper: SessionBERT"]] == ["0.931", "0.932", "0.73", "0.753"]
    assert rows["SessionBERT, ablation budget"][0].startswith("0.623 ± ")  # the mean over both seeds, at 128 tokens
    assert "**holds.**" in text and "**does not hold.**" in text  # each section opens with its verdict
    assert (tmp_path / "paper-tiny-lengths.png").stat().st_size > 1000


def test_the_time_line_counts_the_graph_apart_from_the_ablations():
    ran = paper_report._timing({"seconds_per_seed": [900.0, 960.0], "graph_seconds": [540.0, 600.0], "cpu_cores": 2})
    assert ran == ("Time on this machine (2 CPU cores): 31.0 min for 2 seed(s), 6.0 min per seed for the ablations "
                   "and 9.5 min per seed for the whole graph it ran.")
    reused = paper_report._timing({"seconds_per_seed": [360.0], "graph_seconds": [None], "cpu_cores": 2})
    assert reused.endswith("6.0 min per seed for the ablations (the graph runs were reused from --homes).")

"""Reports: a panel's summary line against the best tuned baseline."""

from learned_optim.meta.evaluation import Summary, Trajectory, summarize
from learned_optim.meta.reporting import summary_row


def test_summary_counts_the_problems_where_the_lstm_ends_below_the_best_baseline_on_the_same_problem():
    def summary(name, finals):  # 12 steps per run: start at 5, end at `final` for the last 10
        runs = [Trajectory([5.0, 4.0] + [final] * 10) for final in finals]
        return summarize(name, {"final": runs, "sum": runs}, {"final": 0.1, "sum": 0.1})

    lstm, adam, sgd = summary("LSTM", [1.0, 2.0, 6.0]), summary("Adam", [1.5, 1.5, 1.5]), summary("SGD", [9, 9, 9])
    row = summary_row("panel", [lstm, sgd, adam])
    assert "(Adam, lr 0.1) | 2.00 | 1 / 3 | 2 / 3 |" in row  # LSTM below Adam on the first problem only
    measured = Summary.from_json(adam.to_json())  # as read from an earlier evaluation's JSON: no runs
    assert not measured.runs and "| 2.00 | 1 / 3 | 2 / 3 |" in summary_row("panel", [lstm, measured])

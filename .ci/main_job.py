"""The main job's numbers equal those on ``pretrained/l2l-quadratic``'s card, which it reproduces: the final loss
and sum of losses of the LSTM and of every tuned baseline, within 5% (other CPUs round differently).

    python .ci/main_job.py RUN_DIR
"""

import json
import pathlib
import re
import sys

TOLERANCE = 0.05
card = (pathlib.Path(__file__).parents[1] / "pretrained" / "l2l-quadratic" / "README.md").read_text()
measured = json.loads((pathlib.Path(sys.argv[1]) / "evaluation" / "quadratic.json").read_text())["results"]
NUMBER = r"([-+\d.e]+) ± [-+\d.e]+"
for summary in measured:
    row = re.search(rf"^\| {re.escape(summary['name'])} \|.* \| {NUMBER} \| {NUMBER} \|$", card, re.MULTILINE)
    assert row, f"no row for {summary['name']} in the card"
    for metric, expected in zip(("final", "sum"), map(float, row.groups())):
        value = summary["metrics"][metric]
        print(f"{summary['name']:8} {metric:5} main job {value:.4g}, card {expected:.4g}")
        assert abs(value - expected) <= TOLERANCE * abs(expected), (summary["name"], metric, value, expected)
print("the main job reproduces the card")

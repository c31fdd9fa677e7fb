"""`mlmodel baseline --model` unpickles only bytes it has verified, and asks for the digest.

The model file is read once: the digest is computed over the bytes that are unpickled, so
a file replaced after it was hashed cannot be loaded instead (the test replaces it the
moment a second read of it begins, as an attacker sharing the directory could).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import orjson
import pytest
from sklearn.linear_model import LogisticRegression

from mlmodel_operator.cli import main
from mlmodel_operator.example_models import churn_data

NAMES = [f"f{i}" for i in range(8)]


class _Touch:
    """Unpickles as a call: creates ``path``. What a swapped-in file could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (pathlib.Path.touch, (self.path,))


@pytest.fixture()
def train(tmp_path: Path) -> tuple[Path, Path, str]:
    x, y = churn_data(n=300)
    csv = tmp_path / "train.csv"
    lines = [",".join([*NAMES, "churned"])]
    lines += [",".join(f"{v:.6f}" for v in [*row, label]) for row, label in zip(x, y, strict=True)]
    csv.write_text("\n".join(lines) + "\n")
    model = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), model)
    return csv, model, hashlib.sha256(model.read_bytes()).hexdigest()


CHILD = """
import json, os, sys
model, swap_in, csv, out, sha = sys.argv[1:6]
opens = []

def hook(event, args):
    if event != "open" or isinstance(args[0], int) or os.fsdecode(args[0]) != model:
        return
    opens.append(args[1])
    if len(opens) == 2:  # a second read of the file begins: the file is replaced now
        os.replace(swap_in, model)

sys.addaudithook(hook)
from mlmodel_operator.cli import main
code = main(["baseline", csv, "--model", model, "--sha256", sha, "--label", "churned",
             "-o", out])
print(json.dumps({"code": code, "opens": len(opens)}))
"""


def test_the_model_is_read_once_so_a_file_swapped_after_hashing_is_never_loaded(
    tmp_path: Path, train: tuple[Path, Path, str]
) -> None:
    csv, model, sha = train
    marker = tmp_path / "swapped-in-code-ran"
    swap_in = tmp_path / "swap-in.joblib"
    swap_in.write_bytes(pickle.dumps(_Touch(marker)))
    out = tmp_path / "baseline.json"

    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(swap_in), str(csv), str(out), sha],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert not marker.exists(), "bytes other than the verified ones were unpickled"
    assert seen == {"code": 0, "opens": 1}
    assert orjson.loads(out.read_bytes())["predictions"]["classes"] == ["0", "1"]


def test_without_sha256_the_model_is_refused_naming_the_flag(
    tmp_path: Path, train: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    csv, model, _ = train
    out = tmp_path / "b.json"
    code = main(["baseline", str(csv), "--model", str(model), "--label", "churned", "-o", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--model needs --sha256" in err and "--no-sha256" in err
    assert not out.exists()


def test_the_opt_out_is_explicit(tmp_path: Path, train: tuple[Path, Path, str]) -> None:
    csv, model, _ = train
    out = tmp_path / "b.json"
    argv = ["baseline", str(csv), "--model", str(model), "--no-sha256", "--label", "churned"]
    assert main([*argv, "-o", str(out)]) == 0
    assert "predictions" in orjson.loads(out.read_bytes())


def test_a_digest_and_the_opt_out_together_are_refused(
    tmp_path: Path, train: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    csv, model, sha = train
    argv = ["baseline", str(csv), "--model", str(model), "--sha256", sha, "--no-sha256"]
    assert main([*argv, "--label", "churned", "-o", str(tmp_path / "b.json")]) == 2
    assert "not both" in capsys.readouterr().err

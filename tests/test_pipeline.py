"""Integration: the real pipeline script on real data, in a reduced mode."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import keras_transfer as kt
from keras_transfer import reference

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "fashion_to_mnist.py"
SHIPPED = REPO / "weights" / "fashion_mnist.h5"
WEIGHTED_FEATURES = ["Conv1", "Bn1", "Conv2", "Bn2", "Conv3", "Bn3"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_script(*flags):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, str(SCRIPT), *flags], capture_output=True,
                          text=True, env=env, timeout=900)


def check_outputs(out_dir, arms):
    results = json.loads((out_dir / "results.json").read_text())
    report = results["transfer_report"]
    assert sorted(report["loaded"]) == sorted(WEIGHTED_FEATURES)
    assert sorted(report["missing"]) == ["Dense1_1", "Dense2_2"]
    assert sorted(report["unused"]) == ["Dense1", "Dense2"]
    transfer = results["arms"]["transfer"]
    assert transfer["frozen_max_change_phase1"] == 0.0  # bit-identical in phase 1
    assert transfer["history"]["phase"] == [1.0, 2.0]
    assert set(results["arms"]) == set(arms)
    assert (out_dir / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = reference.target_cnn()
    loaded = kt.load_weights_by_name(target, out_dir / "mnist.h5")
    assert len(loaded.loaded) == 8 and not loaded.missing
    return results


def test_reduced_pipeline_trains_source_then_transfer_and_scratch(tmp_path):
    out = tmp_path / "out"
    source = tmp_path / "source" / "fashion_mnist.h5"
    done = run_script(
        f"--out_dir={out}", f"--source_weights={source}", "--retrain_source",
        "--source_epochs=1", "--source_examples=4000", "--train_examples=2000",
        "--head_epochs=1", "--epochs=2", "--batch_size=64")
    assert done.returncode == 0, done.stderr[-3000:]
    results = check_outputs(out, ["transfer", "scratch"])
    assert results["source_test_accuracy"] > 0.5  # Fashion-MNIST, 10 classes
    assert results["arms"]["transfer"]["test_accuracy"] > 0.6
    manifest = json.loads((source.parent / "MANIFEST.json").read_text())
    assert manifest["fashion_mnist.h5"]["sha256"] == kt.weights._files.sha256_of(source)
    assert "transfer" in done.stdout and "scratch" in done.stdout  # summary table


def test_shipped_source_weights_transfer_well(tmp_path):
    out = tmp_path / "out"
    done = run_script(f"--out_dir={out}", "--train_examples=2000", "--head_epochs=1",
                      "--epochs=2", "--batch_size=64", "--skip_scratch")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Source:" not in done.stdout  # shipped weights were used, not retrained
    results = check_outputs(out, ["transfer"])
    assert results["arms"]["transfer"]["test_accuracy_phase1"] > 0.85
    assert results["arms"]["transfer"]["test_accuracy"] > 0.85


def test_a_tampered_weights_file_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(SHIPPED, folder / "fashion_mnist.h5")
    shutil.copy(SHIPPED.parent / "MANIFEST.json", folder / "MANIFEST.json")
    data = bytearray((folder / "fashion_mnist.h5").read_bytes())
    data[-100] ^= 0xFF
    (folder / "fashion_mnist.h5").write_bytes(bytes(data))
    done = run_script(f"--out_dir={tmp_path / 'out'}",
                      f"--source_weights={folder / 'fashion_mnist.h5'}", "--skip_scratch")
    assert done.returncode == 1
    expected = json.loads((folder / "MANIFEST.json").read_text())["fashion_mnist.h5"]["sha256"]
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_hub_finetune_script_reuses_the_exported_module(tmp_path):
    script = REPO / "scripts" / "hub_finetune.py"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(script), f"--out_dir={tmp_path}", "--train_examples=2000",
         "--head_epochs=1", "--epochs=2", "--batch_size=64"],
        capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    arm = json.loads((tmp_path / "results.json").read_text())["arms"]["hub"]
    assert arm["frozen_max_change_phase1"] == 0.0
    assert arm["test_accuracy_phase1"] > 0.85 and arm["test_accuracy"] > 0.85
    assert (tmp_path / "fashion_features" / "saved_model.pb").is_file()

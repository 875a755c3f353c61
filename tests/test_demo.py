"""The README's local 2-process demo, shortened: the same launcher command and the default config
(the one_tower net, the demo recipe), on a smaller miniature archive for fewer steps, with
main.py run through tests/multihost_worker.py (fc6/fc7 narrowed to 64 units: the same code paths
with 3M instead of 58M parameters, a third of the CPU time, as tests/train/test_multihost.py runs
it).

    python -m alexnet_jax.tools.launch --num_processes=2 --devices_per_process=2 -- \
        main.py --workdir=runs/two_processes

The full demo (72 steps, >= 95% held-out top-1 from the second epoch) is measured in the README;
here it must run end to end on 2 processes x 2 devices, log finite losses and learn.
"""

import json
import os
import subprocess
import sys

import numpy as np

STEPS = 8  # 2 epochs of 4 classes x 32 images at batch 32


def test_the_two_process_demo_command_trains_and_learns(tmp_path, repo_root, jax_cache_dir):
    workdir = tmp_path / "two_processes"
    shortened = [
        f"--config.data_dir={tmp_path / 'tfds'}",
        f"--config.miniature_dir={tmp_path / 'miniature'}",
        "--config.miniature_train_per_class=32",
        "--config.miniature_val_per_class=4",
        "--config.miniature_image_sides=(64,96)",
        f"--config.num_train_steps={STEPS}",
        "--config.log_every_steps=1",
    ]
    command = [sys.executable, "-m", "alexnet_jax.tools.launch", "--num_processes=2"]
    worker = os.path.join("tests", "multihost_worker.py")  # main.py, fc6/fc7 narrowed
    command += ["--devices_per_process=2", "--", worker, f"--workdir={workdir}", *shortened]
    env = dict(os.environ, ALEXNET_JAX_CACHE_DIR=jax_cache_dir)
    env.pop("XLA_FLAGS", None)  # the launcher gives each process its 2 devices
    done = subprocess.run(
        command, cwd=repo_root, env=env, capture_output=True, text=True, timeout=420
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f if line.strip()]
    train = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
    evals = [r for r in records if r["split"] == "eval"]
    assert sorted(train) == list(range(1, STEPS + 1))
    losses = np.asarray([train[s] for s in sorted(train)])
    assert np.isfinite(losses).all(), losses
    # Learning: the last steps' loss is well below the first steps' (chance: ln 4 = 1.39).
    assert losses[-3:].mean() < 0.8 * losses[:3].mean(), losses
    assert [r["step"] for r in evals] == [4, 8]  # once per epoch
    assert all(np.isfinite(r["loss"]) for r in evals)
    # Process 0 prints the banner once; process 1 nothing at the default verbosity; no Gloo.
    lines = (done.stdout + done.stderr).splitlines()
    assert sum(line.startswith("[0]") and "run: " in line for line in lines) == 1
    assert not any(line.startswith("[1]") and "run: " in line for line in lines)
    assert not any(line.startswith("[1]") and "workdir: " in line for line in lines)
    assert not any("Gloo" in line for line in lines), "Gloo's connection lines reach the console"

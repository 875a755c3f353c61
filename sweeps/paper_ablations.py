"""The paper's ablations on ImageNet (sections 3.2-3.4, 4.2): each a change to the run behind
40.7% / 18.2% (configs/imagenet.py), one arm per row of docs/PAPER.md's "Ablations claimed".

    python -m alexnet_jax.tools.sweep --sweep=sweeps/paper_ablations.py \
        --sweep_dir=runs/paper_ablations
    python -m alexnet_jax.tools.sweep --sweep=sweeps/paper_ablations.py --print_commands  # cluster

configs/imagenet.py needs the ILSVRC2012 archives: set its manual_dir and data_dir (edit the file
or a copy; the sweep gives every arm the same base config). The paper's claims (top-1 / top-5
error above the baseline's): no LRN +1.4 / +1.2; 2/2 pooling +0.4 / +0.3; one tower with half
the kernels +1.7 / +1.2 (its footnote: conv5 and the FC layers kept full; the code's logs:
39.17 / 18.23 against 37.47 / 17.00); no dropout "overfits substantially". Not run here.

Cost, an estimate (no GPU images/s has been measured for this project; benchmarks/RESULTS.md):
- From the paper: 5-6 days on two GTX 580s per arm, 240-288 GTX-580-hours; five arms 1,200-1,440.
- From FLOPs: models.train_flops_per_image gives 4.35 GFLOP per training image for the baseline
  and the 2/2 arm (the no-LRN and no-dropout arms the same to within LRN's share), 2.35 for the
  half net; x 1.28M images x 91 epochs, plus a 10-view evaluation of 50,000 images per epoch
  (a third of a training image's FLOPs per view): 0.57 EFLOP per full arm, 0.31 for the half.
  At an ASSUMED sustained 40 TFLOP/s (about a quarter of an A100's 156 TF32 peak; the config
  computes in float32) that is 4.0 GPU-hours per full arm, 2.1 for the half, ~18 for the sweep.
  The input pipeline usually bounds it instead: 117M JPEG decodes per arm at an ASSUMED
  3,000 images/s from a 32-core host is 11 hours per arm, ~54 for the five.
  So: about 20-55 GPU-hours for the sweep on one modern GPU, run one arm after another.
"""


def get_sweep():
    return {
        "config": "configs/imagenet.py",  # relative to the directory the sweep runs in
        "arms": {
            "baseline": {},  # the two-tower net of run 145 (40.7% / 18.2%)
            # Section 3.3. The code's block-1 order and its same-map normalization after LRN2
            # both follow the LRN layers, so they go with them (ReLU and max-pool commute).
            "no_lrn": {"lrn": False, "block1_order": "conv_relu_lrn_pool", "spatial_norm2": False},
            "pool_2x2": {"pool_window": 2, "pool_stride": 2},  # section 3.4: non-overlapping
            # Section 3.2: one tower, half the kernels of each conv layer but conv5, whose 256
            # the paper's footnote to 3.2 and layers-145-half.cfg keep (docs/PAPER.md);
            # width="half" halves conv5 too (the text read literally; docs/PAPER.md).
            "one_tower_half": {"variant": "one_tower", "width": "half_code"},
            "no_dropout": {"dropout_rate": 0.0},  # section 4.2
        },
    }

"""ImageNet RGB statistics for the input pipeline: per-channel mean/std, the PCA lighting basis.

Sources (all on the 0-1 pixel scale, RGB order):
- Mean and std: fb.resnet.torch `datasets/imagenet.lua` (`meanstd`), the values torchvision and most
  re-implementations use: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
- PCA lighting: fb.resnet.torch `datasets/imagenet.lua` (`pca.eigval`, `pca.eigvec`), the widely
  used estimate of the eigen-decomposition of the 3x3 covariance of ImageNet RGB pixel values that
  AlexNet's "fancy PCA" lighting noise needs (docs/PAPER.md, "Data and augmentation").

Orientation: fb.resnet.torch's `Lighting` transform computes
`rgb[r] = sum_c eigvec[r][c] * alpha[c] * eigval[c]`, so each COLUMN of the published matrix is an
eigenvector. `PCA_EIGVECS` below stores them as rows (`PCA_EIGVECS[i]` is the i-th eigenvector,
matching `PCA_EIGVALS[i]`), i.e. it is the transpose of the published matrix. The first eigenvector
is the luminance direction, close to (1, 1, 1) / sqrt(3) up to sign, as expected for natural images
(tests/data/test_input_pipeline.py checks this and C v_i = lambda_i v_i).
"""

import numpy as np

# Per-channel RGB mean and standard deviation on the 0-1 scale (fb.resnet.torch `meanstd`).
RGB_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
RGB_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# Eigenvalues of the RGB covariance on the 0-1 scale, largest first (fb.resnet.torch `pca.eigval`).
PCA_EIGVALS = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32)

# Published matrix (fb.resnet.torch `pca.eigvec`); its columns are the eigenvectors.
_PUBLISHED_EIGVEC_MATRIX = np.array(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ],
    dtype=np.float32,
)

# Row i is the unit eigenvector belonging to PCA_EIGVALS[i].
PCA_EIGVECS = np.ascontiguousarray(_PUBLISHED_EIGVEC_MATRIX.T)


def pca_lighting_rgb_offset(alphas: np.ndarray) -> np.ndarray:
    """The paper's lighting offset sum_i alpha_i * lambda_i * p_i (0-1 scale) for alphas [..., 3].

    A numpy reference for tests and documentation; the pipeline computes the same in TensorFlow.
    """
    return (np.asarray(alphas) * PCA_EIGVALS) @ PCA_EIGVECS

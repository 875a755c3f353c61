"""main.py with AlexNet's fc6 and fc7 narrowed to 64 units, for tests/train/test_multihost.py.

The full 4096-unit layers hold 55M parameters: with several fake CPU devices per process each
training step and checkpoint would take seconds. Narrowing them (and nothing else) keeps every
code path of main.py -> train.train_and_evaluate while a test runs in seconds. Run as
`python tests/multihost_worker.py <main.py flags>`; alexnet_jax.tools.launch adds the process flags.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alexnet_jax.model import layers

FC_WIDTH = 64  # units of fc6 and fc7 instead of 4096
_ORIGINAL_DENSE = layers.Net.dense


def narrow_dense(self, name, features, x):
    """Net.dense with fc6/fc7 at FC_WIDTH units (installed by `narrow_fc_layers`)."""
    return _ORIGINAL_DENSE(self, name, FC_WIDTH if name in ("fc6", "fc7") else features, x)


def narrow_fc_layers(setattr_fn=setattr):
    """Installs `narrow_dense`; pass pytest's monkeypatch.setattr to undo it after a test."""
    setattr_fn(layers.Net, "dense", narrow_dense)


if __name__ == "__main__":
    import atexit

    from absl import app

    if os.environ.get(
        "REPORT_TENSORFLOW_IMPORT"
    ):  # tests/train/test_main.py: synthetic runs skip TF
        atexit.register(lambda: print(f"tensorflow imported: {'tensorflow' in sys.modules}"))

    import main

    narrow_fc_layers()
    app.run(main.main, flags_parser=main._parse_flags)

"""The XLA:CPU deadlock behind hostile pass 19, #46 (docs/RELIABILITY.md), with no project code:
a jitted gradient step on a mesh of 2 processes x 2 CPU devices (gloo collectives), its steps
dispatched without waiting for the device. Both processes at once:

    for p in 0 1; do python docs/gloo_hang_repro.py $p 24001 0 & done; wait    # hangs
    for p in 0 1; do python docs/gloo_hang_repro.py $p 24002 2 & done; wait    # finishes

The third argument: how many steps may be in flight (0: no limit; 2: wait for step k - 2 after
dispatching step k, as alexnet_jax/train/loop.py does). Each process prints every 500 steps and
"done" after 3,000. On a 2-core machine (tenth session) the first hung in 14 of 14 tries right
after step 0, both processes idle: gdb showed one local device's step waiting in gloo's
all-reduce for the other's, whose launch waited on a semaphore in XLA's
CpuPjRtRawLoadedExecutable::Execute. With 2 in flight it finished in 8 of 8.
"""

import os
import sys
import time

process, port, in_flight = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process)
mesh = Mesh(np.array(jax.devices()), ("data",))
batch_sharding = NamedSharding(mesh, PartitionSpec("data"))


@jax.jit
def step(w, x):
    loss = lambda w: jnp.mean((x @ w) ** 2)
    return w - 0.01 * jax.grad(loss)(w), loss(w)


w = jax.device_put(jnp.ones((64, 10)), NamedSharding(mesh, PartitionSpec()))
start, queued = time.time(), []
for i in range(3000):
    local = np.random.RandomState(2 * i + process).randn(2, 64).astype(np.float32)
    w, loss = step(w, jax.make_array_from_process_local_data(batch_sharding, local))
    queued.append(loss)
    if in_flight and len(queued) > in_flight:
        queued.pop(0).block_until_ready()
    if i % 500 == 0:
        print(process, i, float(loss), f"{time.time() - start:.1f} s", flush=True)
print(process, "done", flush=True)

"""`python -m alexnet_jax.tools` names no tool: one `error:` line listing them, exit code 2."""

from alexnet_jax import tools

tools.refuse_to_run(tools.__name__)

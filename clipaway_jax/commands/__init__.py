"""Subcommands of `clipaway-jax`, one module each; `pipeline_args` holds the options they share."""

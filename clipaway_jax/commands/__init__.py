"""Subcommands of `clipaway-jax`, one module each (the top layer: only `clipaway_jax.cli` imports them);
`pipeline_args` holds the options they share, `app_page` the app's page."""

"""Subcommands of the `contrastlab` command line."""

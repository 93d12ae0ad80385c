"""Subcommands of `mella` beyond demo / sql / ui: one module each, with ``register(subparsers)``.

A module adds its parser with ``help=`` and ``set_defaults(func=...)``; the function takes the parsed arguments
and returns the exit code. Heavy imports go inside the function so `mella --help` stays fast.
"""

"""`python -m dagc`."""

from dagc.cli import run

run()

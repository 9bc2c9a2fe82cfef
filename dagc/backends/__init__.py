"""Backends: write IR and analyses to the stream or file they are given."""

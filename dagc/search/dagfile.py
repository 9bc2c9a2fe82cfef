"""The .dag writer the search uses for `-o` (dagc.backends.dagfile once it lands)."""

from dagc.search._dagfile_stub import program_to_dag

__all__ = ["program_to_dag"]

"""Test drivers: the production entry points run as a subprocess (for signals and exit
codes) with what tests inject and production never sets (a held window, a held job, a
fast clock)."""

"""Package data: see setup.py (mapped from the top-level folder)."""

"""Test harnesses that load the reference implementations (never imported by product code)."""

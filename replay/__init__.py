"""eventvault replay."""

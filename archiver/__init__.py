"""eventvault archiver."""

"""Chat data: reading files, the built-in demo dataset, validation."""

"""The command-line interface: one module per noun, thin over the Workspace services."""

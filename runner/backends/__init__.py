"""Where a run executes: each backend prepares the exact command or files, then submits them."""

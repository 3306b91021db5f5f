"""Session set-up wire formats and the code that speaks them (iroh front door, copy-paste blocks)."""

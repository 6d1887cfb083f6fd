"""Optional bridges to other tools (Weights & Biases, lm-evaluation-harness)."""

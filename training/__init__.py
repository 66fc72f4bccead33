"""Training: data, rewards, rollouts through the graph, GRPO and evaluation (built by later issues)."""

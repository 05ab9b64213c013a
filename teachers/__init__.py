"""Deep contrastive RL teachers."""

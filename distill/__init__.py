"""distill: teacher-student distillation for deep contrastive RL."""

__version__ = "0.1.0"

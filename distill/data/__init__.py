"""What training reads: the replay buffer and the sensor model."""

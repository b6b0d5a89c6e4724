"""Image and video inputs: reading, validating and preprocessing frames for the models."""

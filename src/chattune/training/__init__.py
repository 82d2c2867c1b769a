"""Training building blocks: chat templates for training, model loading, the SFT trainer."""

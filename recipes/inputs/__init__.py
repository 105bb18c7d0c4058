"""The user's inputs: inspecting a checkpoint, preparing a dataset's splits."""

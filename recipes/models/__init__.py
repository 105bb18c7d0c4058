"""Model-producing stages (fine-tune, teacher logits, distill, prune) and the PyTorch model helpers they share."""

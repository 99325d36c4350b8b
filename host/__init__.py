"""Host-CPU layers: inner product (batched, pruned) and softmax."""

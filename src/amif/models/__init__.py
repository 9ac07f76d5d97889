"""Model components of AMiF: encoders, co-attention fusion, gated cross-attention, answer decoder."""

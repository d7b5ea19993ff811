"""Training helpers: miners, samplers and the other pieces around a contrastive loss."""

"""CN-CLIP through cn_clip's own classes: architectures, loading weights, model cards,
tokens, and encoding images and captions into feature shards."""

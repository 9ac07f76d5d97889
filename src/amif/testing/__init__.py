"""Weight files in the released on-disk formats, with random values, for tests and benchmarks.

As ``torch.testing`` serves torch's own tests, this package serves amif's: nothing in it downloads, and
every file it writes has the key names, tensor layouts and folder contents of the real release, so
that the loaders read them exactly as they read the real weights.

* :mod:`amif.testing.biomedclip`: BiomedCLIP in its open_clip folder layout, and reference forwards;
* :mod:`amif.testing.paper_size`: the paper configs' image encoder (OpenAI CLIP ViT-B/16 checkpoint),
  text encoder (BERT-base folder) and teacher (transformers CLIP folder), at full or tiny size, and
  random batches of a training step's shapes.
"""

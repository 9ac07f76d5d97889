"""The embedded demo Med-VQA dataset: real anatomy from pip packages with synthetic lesions.

``build_demo_dataset(out_dir, seed=0, scale=1.0, image_size=192, progress=True)`` writes a dataset folder
in the project's record format (see ``docs/demo-dataset.md``) and returns a summary of what it wrote.
"""

from amif_demo.data.build import build_demo_dataset, view_mask

__all__ = ["build_demo_dataset", "view_mask"]

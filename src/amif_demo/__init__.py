"""The ``amif demo`` application: a demo Med-VQA dataset built from real anatomy in pip packages, and a
pipeline that pre-trains, fine-tunes and evaluates the tiny model on it and writes a report.

It uses the library (``amif``) and the training application (``amif_train``); neither imports it. Its
dependencies are the ``demo`` extra (``pip install 'amif[demo]'``). The commands ``amif demo`` and
``amif data demo`` are registered through the ``amif.commands`` / ``amif.data_commands`` entry points
(:mod:`amif_demo.cli`).
"""

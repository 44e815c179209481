"""xmed's benchmarks: ``python -m benchmarks [--suite cpu|gpu] [--quick] [--device cpu|cuda]
[--out DIR] [--only NAME[,NAME]]`` (see :mod:`benchmarks.runner`). Each figure is written next to
its baseline, measured in the same run, and their ratio, into one ``results.json`` and one
``results.md``; ``benchmarks/gpu.sh`` runs the GPU suite on a machine with one GPU.
"""

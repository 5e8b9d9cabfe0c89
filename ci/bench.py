#!/usr/bin/env python
"""Speed benchmark: quantized training step / float next to Brevitas, Lightning's overhead, README's Performance section.

    .venv/bin/python ci/bench.py [--quick] [--threads 2] [--nets mlp,lenet5,vgg_small] [--readme]

Same as ``python -m benchmarks.training``; see ``benchmarks/training.py`` for what is measured.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.training import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())

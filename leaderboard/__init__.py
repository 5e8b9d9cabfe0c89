"""The leaderboard: a pure function of ``leaderboard/claims.yaml`` and the result files under ``results/``.

``python -m leaderboard`` writes ``LEADERBOARD.md`` and ``leaderboard/plots/*.png``; ``python -m leaderboard.claims``
validates the claims registry; ``python -m leaderboard.sweep --scale cpu`` reruns the CPU-scale sweep.
"""

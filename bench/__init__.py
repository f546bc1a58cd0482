"""``make bench``: the operator against the Kubernetes API emulator and the local STS.

``python -m bench.run`` (quick, N = 1 000) or ``python -m bench.run --large`` (N = 10 000);
results in ``bench/out/latest.json`` and ``bench/out/latest.md``. See docs/benchmarks.md.
"""

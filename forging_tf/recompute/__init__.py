"""Recomputing a trace on a platform: the benign reproduction error (SPEC section 2).

recompute_lib.py  every update of a trace recomputed R times, each repeat in a fresh process
                  (worker.py) or as shards on Ray; the result folder, resumable
distribution.py   the per-step distribution of a reproduction error (no TensorFlow)
worker.py         one repeat in a process of its own
recompute.py      forging-recompute
near_ties_lib.py  near-ties of the forward pass (ReLU and max-pool margins in units of their
                  rounding), the choices two platforms make differently, and the outlier table
near_ties.py      forging-near-ties
outliers.py       forging-explain-outliers
"""

"""Exact forging (SPEC section 6): forgeries with the true batch's gradient, and Table IV.

settings.py        the experiments and methods to choose from, and the settings results record
dense.py           fully connected ReLU networks as float64 linear algebra
propositions.py    Prop. 1, mini-batch perturbation (Prop. 2), error-matrix sampling (Prop. 3)
scoring.py         approximation errors of a forged batch, and its distance to the domain
in_domain.py       the search for a forgery with pixels on the grid
exact_lib.py       the Fig. 4, Fig. 5 and in-domain experiments, saved as data
exact.py           forging-exact
bruteforce_lib.py  Table IV: meet-in-the-middle and exhaustive search for a colliding batch
bruteforce.py      forging-bruteforce
"""

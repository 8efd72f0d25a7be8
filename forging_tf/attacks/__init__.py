"""Greedy forging attacks in the deletion setting (SPEC section 5), on the steps of a trace.

  settings.py    the attacks and engines to choose from, and AttackSettings (what a result records)
  greedy.py      the deletion set U, Thudi et al.'s greedy search, Zhang et al.'s nearest neighbours
  engine.py      scoring candidate batches: the vectorised engine and the sequential loop
  attack_lib.py  an attack on a trace's steps, saved as data
  attack.py      forging-attack

The verifier's side of the game is forging_tf.forging_game (forging-verify).
"""

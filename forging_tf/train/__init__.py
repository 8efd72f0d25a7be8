"""Training that writes an execution trace (SPEC section 1): the first stage of the pipeline.

train_lib.py  plain SGD with the one SGD step, seeded epoch shuffles, the trace written as it
              trains, resumable
train.py      forging-train
"""

"""The verifier's threshold epsilon from data (SPEC sections 4 and 8; docs/CALIBRATION.md).

  policies.py        threshold policies: the paper's max, a quantile, a ratio of the update norm
  calibrate_lib.py   policies fitted to saved reproduction errors, their false-reject rate with
                     one platform pair left out, the forged steps they accept, the recommendation
  plotting.py        the trade-off figure (honest steps rejected against forged steps accepted)
  calibrate.py       forging-calibrate

Nothing here loads TensorFlow: a calibration is computed from saved results.
"""

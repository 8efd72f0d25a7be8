"""The whole study in one command: what a study is, and how its stages run.

presets.py        the platforms and the presets (quick, paper, smoke)
stages.py         a preset as a plan of stages, each a command of this package run alone
reproduce_lib.py  the plan run into one folder, resumably, and its REPORT.md
reproduce.py      forging-reproduce
"""

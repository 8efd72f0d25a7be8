"""The whole study in one command: what a study is, and how its stages run.

platforms.py      a study's platforms: built in, or from the user's file (--platforms)
presets.py        the presets (quick, paper, smoke)
stages.py         a preset as a plan of stages, each a command of this package run alone
reproduce_lib.py  the plan run into one folder, resumably, and its REPORT.md
ray_executor.py   the stages as Ray tasks, each on a node with its platform's resources
reproduce.py      forging-reproduce
"""

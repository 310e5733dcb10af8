"""The demo task: imports a package from its requirements.txt, trains nothing, prints a lot.

`scripts/demo` commits this folder as a git repository, changes the greeting without
committing (the agent applies that diff), and runs it through the agent.
"""
import platform

import tabulate

GREETING = "hello from the committed code"

rows = [(step, round(1.0 / (step + 1), 4)) for step in range(5)]
print(GREETING)
print(f"python {platform.python_version()}, tabulate {tabulate.__version__}")
print(tabulate.tabulate(rows, headers=["step", "loss"]))

"""The demo stack (scripts/demo_stack.py, run by scripts/develop), started as a whole."""

"""Parts of the demo stack (``scripts/demo_stack.py``, run by ``scripts/develop``)."""

"""The judge of fastlcel by langchain_core's own runnable tests (see judge.py)."""

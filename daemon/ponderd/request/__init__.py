"""One request's path: validate, assess, plan, reserve, generate, vote, stop, refine, settle (pipeline.py)."""

"""Offline test kit: tiny tokenizer/model built in-process, and exact table-driven LMs for sampler tests."""

"""fem: filtered-EM reasoning. Sample rationales, keep the ones that reach the right answer, fine-tune LoRA, repeat."""

__version__ = "0.1.0"

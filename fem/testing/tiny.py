"""A tiny byte-level tokenizer with a ChatML template and a tiny random Llama, built in-process (no hub)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Question: what is 2 + 3? Let's think step by step. 2 + 3 = 5. The answer is 5.",
    "Verdict: A Confidence: 80% Verdict: B Confidence: 60% The answer is (A) (B) (C) (D) #### \\boxed{12}",
    "0123456789 +-*/=()?.,:;!'\"%#{}\\ abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "Response A Response B Instruction: which response is better? The summary is good.",
]


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer (any string encodes, no <unk>) with a ChatML template and EOS <|im_end|>."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_tiny_model(
    tokenizer, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0, initializer_range: float = 0.2
):
    """A randomly initialised Llama (about 100k parameters) matching ``tokenizer``. ``initializer_range`` is larger
    than Llama's 0.02 so that LoRA alone (which cannot rescale the tied embeddings) can make confident predictions."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_tiny_model(out_dir: str | Path, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Path:
    """Build the tiny tokenizer and model and save both to ``out_dir`` (a normal HF folder). Returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, hidden_size=hidden_size, num_layers=num_layers, seed=seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


if __name__ == "__main__":  # python -m fem.testing.tiny OUT_DIR
    print(save_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))

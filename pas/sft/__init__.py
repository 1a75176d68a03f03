"""Supervised fine-tuning baselines (LoRA through peft)."""

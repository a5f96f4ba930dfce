"""Fine-tuning: LoRA partition, optimiser, pure train step, loop and checkpoints."""

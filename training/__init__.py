"""Training from recorded data: the dataset builder (``dataset``), the LoRA and full
fine-tune trainers (``trainer``), registration into the models dir (``register``), and the
micro model of our own (``micro``). See docs/training.md."""

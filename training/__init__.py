"""Training from recorded data: the dataset builder (``dataset``), the LoRA and full
fine-tune trainers (``trainer`` runs what ``config`` describes, with ``base_model``,
``encoding``, ``checkpoints``, ``validation`` and ``output``), registration into the models
dir (``register``), and the micro model of our own (``micro``). See docs/training.md."""

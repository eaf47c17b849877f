"""The model: tokenizer, the BERT networks, pretraining and fine-tuning, batched inference, precision."""

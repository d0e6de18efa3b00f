"""training_dataset: raw rows from a source, prompt formats, chat-template facts, tokenizing, masking, splits, data checks."""

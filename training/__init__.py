"""The draft factory: corpus, pretraining, target-generated data, alignment, evaluation."""

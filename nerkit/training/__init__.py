"""Training: data ingest, model, train loop, export (imports torch/transformers)."""

"""CDK infrastructure of the NER service (app, settings, stack and its constructs)."""

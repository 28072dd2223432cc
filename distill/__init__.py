"""Dataset distillation: small synthetic training sets for cheaper mask search (not built yet)."""

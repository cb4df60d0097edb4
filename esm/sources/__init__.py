"""Event sources: pollers that yield batches and acknowledge them (DESIGN.md rule 1)."""

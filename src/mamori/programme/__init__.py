"""The clinic's security programme: the MHLW checklist answered from mamori's own state."""

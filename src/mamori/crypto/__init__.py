"""Encryption at rest: ``kek`` (the key-encryption key and its sources), ``keyring`` (data keys,
sealing, blind indexes), ``sealed`` (ORM integration), ``startup`` (keys attached before
anything is served), ``rekey`` (rotation and re-encryption), ``recovery`` (offline export)."""

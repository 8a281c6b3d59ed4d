"""Ransomware-proof backups: snapshots compressed with zstd, encrypted with age to offline
public keys, signed hash-chained manifests, page-delta incrementals, several targets.

The server holds only age *recipients* (public keys): it can write backups but cannot read any,
old or new. Restoring needs the offline identity. See docs/backup.md.
"""

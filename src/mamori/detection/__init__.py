"""Detection of abnormal access: explain each access from the clinic's own data, score what
stays unexplained with named rules, group hits into cases for the director's review."""

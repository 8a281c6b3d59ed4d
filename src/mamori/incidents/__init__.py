"""Incidents: the register, the response steps, APPI deadlines, affected patients, drafts."""

"""Restricted patients (staff, VIP, sensitive) and break-the-glass grants."""

"""Pictures for people: the volume trend plot and the mask preview (PNG bytes)."""

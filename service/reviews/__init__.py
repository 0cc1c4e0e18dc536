"""A person's word on the node's measurements: corrected SEGs, accepted and rejected
results (issue 17, item 5)."""

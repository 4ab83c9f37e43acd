"""Cloud Foundry: the Cloud Controller client (:mod:`.client`, the adapter) beside the name sync that uses it
(:mod:`.namesync`: discover instance prefixes in S3, keep names and spaces in step with the CC)."""

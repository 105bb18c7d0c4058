"""Developer tools (not shipped in bundles): API name fixtures and the checker that uses them."""

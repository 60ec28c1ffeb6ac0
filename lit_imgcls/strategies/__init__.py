"""kv-store modes (MXNet's names) mapped onto Lightning strategies."""
